"""Commands that reach into a box over SSH: run, put, get, connect, tunnel, ssh-config
(background tunnels are in `tunnels.py`)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from cloudsh.commands.instances import find_all
from cloudsh.commands.registry import Context, arg, command
from cloudsh.errors import UsageError
from cloudsh.models import HostInfo, Instance


async def _running(ctx: Context, name: str) -> tuple[Instance, HostInfo]:
    from cloudsh.ops.reach import ssh_host

    [inst] = await find_all(ctx, [name])
    return inst, await ssh_host(ctx.backend, inst, progress=ctx.out.info)


def parse_forward(spec: str) -> tuple[int, int]:
    """`PORT` or `LOCAL:REMOTE` -> (local, remote)."""
    parts = spec.split(":")
    try:
        ports = [int(p) for p in parts]
    except ValueError:
        ports = []
    if len(ports) not in (1, 2) or not all(0 < p < 65536 for p in ports):
        raise UsageError(f"bad port forward {spec!r}", "use PORT or LOCAL_PORT:REMOTE_PORT, e.g. 8888 or 9000:8888")
    return (ports[0], ports[-1])


@command(
    "run",
    "Run a command on an instance over SSH, streaming its output; exits with its status.",
    arg("name", kind="instance"),
    arg("cmd", nargs=argparse.REMAINDER, metavar="-- CMD"),
    epilog="example: cloudsh run box -- nvidia-smi",
)
async def run(ctx: Context, a: argparse.Namespace) -> int:
    words = list(a.cmd)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UsageError("no command to run", "example: cloudsh run box -- nvidia-smi")
    _, host = await _running(ctx, a.name)
    # Like OpenSSH: the words are joined with spaces and the remote shell interprets them,
    # so `run box -- 'echo $HOME'` and globs behave as with `ssh box ...`.
    line = " ".join(words)
    result = await ctx.backend.ssh.run(
        host,
        line,
        on_stdout=lambda chunk: ctx.out.write(chunk),
        on_stderr=lambda chunk: ctx.out.write(chunk, err=True),
    )
    return result.exit_status


async def _overwrite(ctx: Context, a: argparse.Namespace, where: str, lost: str) -> None:
    """Ask before replacing what is at `where`."""
    await ctx.confirmed(f"Replace {lost}?", yes=a.yes or a.force, what=f"overwrite {where}")


@command(
    "put",
    "Copy a local file or directory to an instance (through a temporary name; asks before replacing).",
    arg("name", kind="instance"),
    arg("local", kind="path"),
    arg("remote"),
    arg("--force", "-f", flag=True, help="replace what is there without asking (as --yes)"),
    destructive=True,
)
async def put(ctx: Context, a: argparse.Namespace) -> int:
    local = Path(a.local).expanduser()
    if not local.exists():
        raise UsageError(f"{a.local}: no such file or directory", "check the local path")
    _, host = await _running(ctx, a.name)
    target, kind = await ctx.backend.ssh.put_target(host, local, a.remote)
    where = f"{a.name}:{target}"
    if kind is not None:
        await _overwrite(ctx, a, where, f"the directory {where} and everything in it" if kind == "dir" else f"the file {where}")
    target = await ctx.backend.ssh.put(host, local, a.remote)
    ctx.out.info(f"copied {a.local} to {a.name}:{target}")
    return 0


@command(
    "get",
    "Copy a file or directory from an instance (through a temporary name; asks before replacing).",
    arg("name", kind="instance"),
    arg("remote"),
    arg("local", kind="path"),
    arg("--force", "-f", flag=True, help="replace what is there without asking (as --yes)"),
    destructive=True,
)
async def get(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.services.copying import get_target

    _, host = await _running(ctx, a.name)
    local = os.path.expanduser(a.local)
    remote_kind = await ctx.backend.ssh.remote_kind(host, a.remote)
    target = get_target(local, a.remote, remote_kind == "dir")
    if remote_kind is not None and target.exists():
        lost = f"the files in {target} that {a.remote} also has" if target.is_dir() else f"the file {target}"
        await _overwrite(ctx, a, str(target), lost)
    written = await ctx.backend.ssh.get(host, a.remote, local)
    ctx.out.info(f"copied {a.name}:{a.remote} to {written}")
    return 0


@command(
    "connect",
    "Open an interactive SSH session (OpenSSH `ssh` where installed).",
    arg("name", kind="instance"),
    arg("-L", "--forward", repeat=True, kind="port", metavar="PORT[:REMOTE_PORT]", help="also forward a port"),
    takes_terminal=True,
    aliases=("ssh",),
)
async def connect(ctx: Context, a: argparse.Namespace) -> int:
    forwards = [parse_forward(f) for f in a.forward or ()]
    _, host = await _running(ctx, a.name)
    b = ctx.backend
    if shutil.which("ssh") and ctx.terminal is not None:
        from cloudsh.ops.reach import recheck_after_timeout
        from cloudsh.services.openssh import openssh_args

        argv = openssh_args(host, b.settings, forwards=forwards, tty=True)
        status = await ctx.terminal(argv)
        # 255 is OpenSSH's own failure; if the firewall explains it (the laptop moved since
        # the last check), no session ever started: connect again now that it is allowed.
        if status == 255 and await recheck_after_timeout(b, host):
            status = await ctx.terminal(argv)
        return status
    if ctx.terminal is None:
        raise UsageError("connect needs a terminal", f"use `cloudsh run {a.name} -- CMD` from scripts")
    from cloudsh.services.ssh_terminal import interactive

    return await interactive(b.ssh, host, forwards)


@command(
    "tunnel",
    "Keep port forwards to an instance open until interrupted (reconnects if dropped).",
    arg("name", kind="instance"),
    arg("ports", nargs="+", kind="port", metavar="PORT[:REMOTE_PORT]"),
    arg("--background", "-b", flag=True, help="hand them to a per-user process that outlives this terminal"),
    arg("--open", flag=True, help="open a Jupyter server's URL (with its token) in the browser"),
    epilog="a Jupyter server on a forwarded port: its URL with the token is printed; "
    "background tunnels: list them with `tunnels`, end them with `tunnel close NAME [PORT]`",
)
async def tunnel(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import tunnels as ops
    from cloudsh.ops.jupyter import open_urls

    if a.background:
        from cloudsh.commands.tunnels import open_in_background

        return await open_in_background(ctx, a.name, [parse_forward(p) for p in a.ports], browse=a.open)

    def show(event: ops.TunnelEvent) -> None:
        if isinstance(event, ops.TunnelOpened) and not event.again:
            ctx.out.print(f"{event.url} -> {event.box}:{event.remote}")
            if event.jupyter:
                ctx.out.print(f"Jupyter: {event.jupyter}")
        elif isinstance(event, ops.TunnelOpened):
            ctx.out.info(f"reopened {event.url} -> {event.box}:{event.remote}")
            if event.jupyter:
                ctx.out.info(f"Jupyter: {event.jupyter}")
        elif isinstance(event, ops.TunnelLost):
            ctx.out.info(f"connection lost ({event.reason}); reconnecting")
        elif isinstance(event, ops.TunnelReconnecting):
            ctx.out.info(f"{event.box}: {event.reason}; trying again in {event.retry_s:g} s")

    keeper = ops.TunnelKeeper(ctx.backend, a.name, [parse_forward(p) for p in a.ports], on_event=show)
    try:
        opened = await keeper.open()
        for line in await open_urls([t.jupyter for t in opened]) if a.open else []:
            ctx.out.info(line)
        ctx.out.info("tunnels open; press Ctrl-C to close them")
        await keeper.keep()
    finally:
        keeper.close()
    return 0


@command(
    "ssh-config",
    "Print an OpenSSH config with a `Host NAME` block per instance that follows it across stop/start.",
    arg("--wake", flag=True, help="connecting to a stopped instance starts it"),
    arg("--output", "-o", kind="path", metavar="FILE", help="write it to FILE instead of stdout"),
    epilog="use it with: ssh -F FILE NAME, scp -F FILE, rsync -e 'ssh -F FILE', VS Code Remote-SSH; "
    "each connection finds the instance's current address through cloudsh's ProxyCommand",
)
async def ssh_config(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import queries

    found = await queries.ssh_config(ctx.backend, wake=a.wake)
    for label, why in found.skipped:
        ctx.out.info(f"skipping {label}: {why}")
    if a.output:
        Path(a.output).expanduser().write_text(found.text)
        ctx.out.info(f"wrote {a.output}")
    else:
        ctx.out.print(found.text.rstrip("\n"))
    return 0


@command(
    "known-hosts forget",
    "Forget an instance's pinned SSH host key (after you rebuilt its host keys).",
    arg("name", kind="instance"),
)
async def known_hosts_forget(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.services.known_hosts import KnownHosts

    [inst] = await find_all(ctx, [a.name])
    if KnownHosts(ctx.backend.settings.known_hosts_path).forget(inst.id):
        ctx.out.info(f"forgot the host key of {inst.label}; the next connection pins a new one")
    else:
        ctx.out.info(f"no host key was pinned for {inst.label}")
    return 0
