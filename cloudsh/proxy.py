"""`ssh NAME` through `ssh-config`: the `ProxyCommand` that reaches a box wherever it
answers now and, with `--wake`, starts it first.

OpenSSH runs `python -I -m cloudsh.proxy (--sandbox | --aws [--profile P]) --region R
[--wake] INSTANCE_ID` and speaks SSH over its stdin and stdout, which this process relays
to and from the box's SSH server, both ways, until either side closes. OpenSSH itself
checks the box's host key against cloudsh's pin (`HostKeyAlias`, the instance id).

The warm path is taken when, in the last minute (`ops.whereabouts`), a listing, launch,
start or connection saw where the box answers, its security groups let this machine's
current address in, and its host key is pinned and confirmed: no cloud call and no boto3,
asyncssh or even asyncio import, so `ssh NAME` costs little more than OpenSSH straight to
the address (bench/proxy_bench.py). Otherwise, or when the remembered address sends no
SSH banner, it asks EC2 where the box is, opens its groups to this machine, pins and
checks its host key (`ops.reach`), and with `--wake` starts a stopped box, saying so on
stderr.

A box that is gone, stopped (without `--wake`) or silent: one line on stderr, which
OpenSSH shows, and exit status 255, OpenSSH's own for a failed connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudsh.config import Settings
from cloudsh.errors import AWSError, CloudshError, InvalidState, NotFound, UsageError
from cloudsh.ops.whereabouts import Addresses, AllowedChecks
from cloudsh.services.known_hosts import KnownHosts

if TYPE_CHECKING:
    from cloudsh.models import HostInfo, Instance
    from cloudsh.services.backend import Backend

#: Exit status when the box cannot be reached (OpenSSH's for a failed connection).
FAILED = 255
#: Seconds a remembered address gets to send its SSH banner before EC2 is asked instead.
WARM_TIMEOUT_S = 3.0
BUFFER = 1 << 16
USAGE = "usage: python -m cloudsh.proxy (--sandbox | --aws [--profile P]) [--region R] [--wake] INSTANCE_ID"

#: A connected socket to the box's SSH server and the first bytes it sent (its banner).
Answer = tuple[socket.socket, bytes]


@dataclass
class Options:
    instance_id: str = ""
    sandbox: bool | None = None
    profile: str | None = None
    region: str | None = None
    wake: bool = False


def parse(argv: Sequence[str]) -> Options:
    opts = Options()
    words = list(argv)
    while words:
        word = words.pop(0)
        if word in ("--sandbox", "--aws"):
            opts.sandbox = word == "--sandbox"
        elif word == "--wake":
            opts.wake = True
        elif word in ("--profile", "--region") and words:
            setattr(opts, word[2:], words.pop(0))
        elif not word.startswith("-") and not opts.instance_id:
            opts.instance_id = word
        else:
            raise UsageError(f"unexpected argument {word!r}", USAGE)
    if not opts.instance_id:
        raise UsageError("no instance id given", USAGE)
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
        settings = Settings.load()
        remembered = _remembered(opts, settings)
        answer = _answering(*remembered, WARM_TIMEOUT_S) if remembered else None
        if answer is None:
            import asyncio

            answer = asyncio.run(_find(opts, settings, recheck=remembered is not None))
    except KeyboardInterrupt:
        return FAILED
    except Exception as exc:  # one line for OpenSSH to show, never a traceback
        from cloudsh.frontend import fail

        fail(exc)
        return FAILED
    return relay(*answer)


def _remembered(opts: Options, settings: Settings) -> tuple[str, int] | None:
    """Where the box answered lately, if nothing needs checking with the cloud first."""
    if opts.sandbox is None:
        return None
    where = Addresses(settings.cache_dir).recall(opts.instance_id)
    if where is None:
        return None
    from cloudsh.root import remembered_address

    address = remembered_address(settings, sandbox=opts.sandbox)
    if address is None or not AllowedChecks(settings.cache_dir).fresh(opts.instance_id, address):
        return None
    return where if _pinned(settings, opts.instance_id) else None


def _pinned(settings: Settings, instance_id: str) -> bool:
    """Whether the box's host key is pinned and confirmed (else it is checked first)."""
    known = KnownHosts(settings.known_hosts_path)
    return bool(known.keys(instance_id)) and known.unconfirmed_since(instance_id) is None


def _answering(host: str, port: int, timeout: float) -> Answer | None:
    """A connection to host:port that sent its first bytes within `timeout`, else None
    (EC2's firewall drops what it does not allow: the connection stays silent)."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        first = sock.recv(BUFFER)
    except OSError:
        first = b""
    if not first:
        sock.close()
        return None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, first


def _say(line: str) -> None:
    sys.stderr.write(f"cloudsh: {line}\n")
    sys.stderr.flush()


async def _find(opts: Options, settings: Settings, *, recheck: bool) -> Answer:
    """Ask the cloud where the box is, make it reachable, and connect."""
    import asyncio

    from cloudsh.root import connect

    backend = connect(settings, sandbox=opts.sandbox, profile=opts.profile, region=opts.region, region_checked=True)
    backend.tell = _say
    try:
        inst = await _instance(backend, opts.instance_id)
        host = await _reachable(backend, inst, wake=opts.wake, recheck=recheck)
        answer = await asyncio.to_thread(_answering, host.host, host.port, settings.ssh_connect_timeout_s)
        if answer is None:
            raise CloudshError(
                f"{inst.label} does not answer SSH at {host.host}:{host.port}",
                "see its state with `cloudsh ls` and try again",
            )
        return answer
    finally:
        await backend.close()


async def _instance(backend: Backend, instance_id: str) -> Instance:
    gone = "remove its block from your SSH config, or write a new one with `cloudsh ssh-config`"
    try:
        inst = await backend.ec2.get_instance(instance_id)
    except NotFound:
        raise NotFound(f"box {instance_id} no longer exists", gone) from None
    except AWSError as exc:
        if not exc.code.startswith("InvalidInstanceID"):
            raise
        raise NotFound(f"box {instance_id} no longer exists", gone) from None
    if inst.state in ("terminated", "shutting-down"):
        raise NotFound(f"box {inst.label} ({inst.id}) no longer exists: it is {inst.state}", gone)
    return inst


async def _reachable(backend: Backend, inst: Instance, *, wake: bool, recheck: bool) -> HostInfo:
    """Where the box answers SSH, its groups open to this machine and its key pinned."""
    from cloudsh.ops import instances, reach

    if inst.state in ("stopped", "stopping"):
        if not wake:
            raise InvalidState(
                f"{inst.label} is {inst.state}",
                f"start it with `cloudsh start {inst.label}`, or write the config with `cloudsh ssh-config --wake`",
            )
        _say(f"{inst.label} is {inst.state}: starting it (ssh-config --wake)")
        [inst] = await instances.start(backend, [inst], pull_results=False, progress=_say)
    elif recheck:  # the remembered address was silent: the firewall may have changed
        await reach.allow_this_machine(backend, inst, fresh=True)
    if inst.state != "running" or backend.hosts.resolve(inst) is None:
        return await reach.wait_ssh(backend, inst, progress=_say)  # pending, or still booting
    if _pinned(backend.settings, inst.id):  # OpenSSH checks the key: no asyncssh (~0.7 s) needed
        return reach.remember(backend, await reach.host_for(backend, inst))
    return await reach.ssh_host(backend, inst, progress=_say)


def relay(sock: socket.socket, first: bytes) -> int:
    """Copy stdin to the box and the box to stdout until the box closes (or OpenSSH
    goes); stdin's end is passed on as a half-close, so the box finishes its answer."""

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(0, BUFFER):
                sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    data = first
    with contextlib.suppress(OSError):
        while data:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
            data = sock.recv(BUFFER)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # At once: OpenSSH waits for its ProxyCommand, and tearing the interpreter down
    # (a thread still blocked on stdin, every module) takes longer than the whole relay.
    os._exit(status)
