"""`ssh NAME` through `ssh-config`: the `ProxyCommand` that reaches a box wherever it
answers now and, with `--wake`, starts it first.

OpenSSH runs `python -I -S .../cloudsh/proxy_main.py (--sandbox | --aws [--profile P])
--region R [--wake] INSTANCE_ID` (or, in configs written before, `python -I -m
cloudsh.proxy ...`) and speaks SSH over its stdin and stdout, which this process relays
to and from the box's SSH server, both ways, until either side closes. OpenSSH itself
checks the box's host key against cloudsh's pin (`HostKeyAlias`, the instance id).

The warm path is taken when, in the last minute (`ops.whereabouts`), a listing, launch,
start or connection saw where the box answers, its security groups let this machine's
current address in, and its host key is pinned and confirmed: no cloud call, and nothing
imported but this module, `ops.whereabouts` and a few C-backed parts of the standard
library (no `site`, asyncio, json, pathlib or typing), so `ssh NAME` costs little more
than OpenSSH straight to the address (bench/proxy_bench.py). Otherwise, or when the
remembered address sends no SSH banner, it asks EC2 where the box is, opens its groups to this machine, pins and
checks its host key (`ops.reach`), and with `--wake` starts a stopped box, saying so on
stderr.

A box that is gone, stopped (without `--wake`) or silent: one line on stderr, which
OpenSSH shows, and exit status 255, OpenSSH's own for a failed connection.
"""

from __future__ import annotations

import _socket  # the C module under `socket`, which costs enum and selectors to import
import _thread
import os
import sys

TYPE_CHECKING = False  # not `typing`'s (see `_warm`)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from cloudsh.config import Settings
    from cloudsh.models import HostInfo, Instance
    from cloudsh.services.backend import Backend

#: Exit status when the box cannot be reached (OpenSSH's for a failed connection).
FAILED = 255
#: Seconds a remembered address gets to send its SSH banner before EC2 is asked instead.
WARM_TIMEOUT_S = 3.0
BUFFER = 1 << 16
USAGE = "usage: python -m cloudsh.proxy (--sandbox | --aws [--profile P]) [--region R] [--wake] INSTANCE_ID"
#: The comment on a pinned key its box's console has not confirmed (`known_hosts.UNCONFIRMED`).
UNCONFIRMED = "cloudsh-unconfirmed:"
#: How long the address checkip.amazonaws.com gave is trusted (`services.address.TTL_S`).
CHECKIP_TTL_S = 60.0

#: A connected socket to the box's SSH server and the first bytes it sent (its banner).
Answer = tuple[_socket.socket, bytes]


class Options:
    def __init__(self) -> None:
        self.instance_id = ""
        self.sandbox: bool | None = None
        self.profile: str | None = None
        self.region: str | None = None
        self.wake = False


def parse(argv: Sequence[str]) -> Options:
    """The command line, or ValueError (`main` says it as a `UsageError`)."""
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
            raise ValueError(f"unexpected argument {word!r}")
    if not opts.instance_id:
        raise ValueError("no instance id given")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        _full_python()
        from cloudsh.errors import UsageError

        return _failed(UsageError(str(exc), USAGE))
    try:
        remembered = _warm(opts)
        answer = _answering(*remembered, WARM_TIMEOUT_S) if remembered else None
        if answer is None:
            answer = _cold(opts, recheck=remembered is not None)
    except KeyboardInterrupt:
        return FAILED
    except Exception as exc:  # one line for OpenSSH to show, never a traceback
        return _failed(exc)
    return relay(*answer)


def _failed(exc: Exception) -> int:
    _full_python()
    from cloudsh.frontend import fail

    fail(exc)
    return FAILED


def _full_python() -> None:
    """Everything cloudsh needs importable: `ssh-config` runs this file with `python -I -S`
    (no `site`, which costs as much as the rest of the warm path), so the virtualenv's
    packages (boto3 ...) are added only when the cloud must be asked."""
    if "site" not in sys.modules:
        import site

        site.main()


def _warm(opts: Options) -> tuple[str, int] | None:
    """Where the box answered lately, if nothing needs checking with the cloud first: an
    address remembered in the last minute (`ops.whereabouts`), the box's groups found to
    let this machine's current address in, and its host key pinned and confirmed.

    Standard library only, and little of it: this is paid for on every `ssh NAME`."""
    if opts.sandbox is None:
        return None
    from cloudsh.ops.whereabouts import Addresses, AllowedChecks

    cache, state, sandbox = _dirs()
    where = Addresses(cache).recall(opts.instance_id)
    if where is None:
        return None
    address = _this_machine(cache, sandbox if opts.sandbox else None)
    if address is None or not AllowedChecks(cache).fresh(opts.instance_id, address):
        return None
    return where if _pinned(os.path.join(state, "known_hosts"), opts.instance_id) else None


def _dirs() -> tuple[str, str, str]:
    """(cache, state, sandbox) directories as `Settings.load()` finds them, read from the
    environment; from `Settings` itself (slower) when a config file may say otherwise."""
    env = os.environ
    home = os.path.expanduser("~")
    config = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    if os.path.exists(os.path.join(config, "cloudsh", "config.toml")):
        _full_python()
        settings = _settings()
        return str(settings.cache_dir), str(settings.state_dir), str(settings.sandbox_path)

    def setting(name: str, xdg: str, default: str) -> str:
        given = env.get(f"CLOUDSH_{name}")
        return os.path.expanduser(given) if given else os.path.join(env.get(xdg) or os.path.join(home, default), "cloudsh")

    state = setting("STATE_DIR", "XDG_STATE_HOME", ".local/state")
    sandbox = env.get("CLOUDSH_SANDBOX_DIR")
    return (
        setting("CACHE_DIR", "XDG_CACHE_HOME", ".cache"),
        state,
        os.path.expanduser(sandbox) if sandbox else os.path.join(state, "sandbox"),
    )


def _settings() -> Settings:
    from cloudsh.config import Settings

    return Settings.load()


def _this_machine(cache: str, sandbox: str | None) -> str | None:
    """This machine's public address if known without asking anyone (as
    `root.remembered_address` says it): the sandbox's published `public_address`, or the
    address checkip answered less than `CHECKIP_TTL_S` ago."""
    import time

    from cloudsh.ops.whereabouts import read_json

    if sandbox is not None:
        state = read_json(os.path.join(sandbox, "state.json"))
        return str(state.get("public_address") or "127.0.0.1") if isinstance(state, dict) else None
    saved = read_json(os.path.join(cache, "public-address.json"))
    try:
        return str(saved["address"]) if 0 <= time.time() - float(saved["at"]) < CHECKIP_TTL_S else None
    except (KeyError, TypeError, ValueError):
        return None


def _pinned(known_hosts: str, alias: str) -> bool:
    """Whether `alias` has a pinned key and none awaiting its console's confirmation
    (`KnownHosts.keys` and `KnownHosts.unconfirmed_since`, read as they read the file)."""
    try:
        with open(known_hosts) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    pinned = False
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or line.lstrip().startswith(("#", "@")) or alias not in parts[0].split(","):
            continue
        if len(parts) > 3 and parts[3].startswith(UNCONFIRMED):
            return False
        pinned = True
    return pinned


def _answering(host: str, port: int, timeout: float) -> Answer | None:
    """A connection to host:port that sent its first bytes within `timeout`, else None
    (EC2's firewall drops what it does not allow: the connection stays silent)."""
    try:
        # bytes: a str would load the idna codec (as `socket.create_connection` does).
        family, kind, proto, _, where = _socket.getaddrinfo(host.encode(), port, 0, _socket.SOCK_STREAM)[0]
        sock = _socket.socket(family, kind, proto)
    except OSError:
        return None
    try:
        sock.settimeout(timeout)
        sock.connect(where)
        first = sock.recv(BUFFER)
    except OSError:
        first = b""
    if not first:
        sock.close()
        return None
    sock.settimeout(None)
    sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    return sock, first


def _cold(opts: Options, *, recheck: bool) -> Answer:
    """Ask the cloud (boto3, asyncio: the full virtualenv)."""
    _full_python()
    import asyncio

    return asyncio.run(_find(opts, _settings(), recheck=recheck))


def _say(line: str) -> None:
    sys.stderr.write(f"cloudsh: {line}\n")
    sys.stderr.flush()


async def _find(opts: Options, settings: Settings, *, recheck: bool) -> Answer:
    """Ask the cloud where the box is, make it reachable, and connect."""
    import asyncio

    from cloudsh.errors import CloudshError
    from cloudsh.ops.reach import mark_allowed
    from cloudsh.root import connect, remembered_address

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
        # It answered, so its groups let this machine in: the next minute's `ssh` is warm.
        if (address := remembered_address(settings, sandbox=backend.target.sandbox)) is not None:
            mark_allowed(backend, inst.id, address)
        return answer
    finally:
        await backend.close()


async def _instance(backend: Backend, instance_id: str) -> Instance:
    from cloudsh.errors import AWSError, NotFound

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
    from cloudsh.errors import InvalidState
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
    if _pinned(str(backend.settings.known_hosts_path), inst.id):  # OpenSSH checks the key: no asyncssh (~0.7 s) needed
        return reach.remember(backend, await reach.host_for(backend, inst))
    return await reach.ssh_host(backend, inst, progress=_say)


def relay(sock: _socket.socket, first: bytes) -> int:
    """Copy stdin to the box and the box to stdout until the box closes (or OpenSSH
    goes); stdin's end is passed on as a half-close, so the box finishes its answer."""

    def upstream() -> None:
        try:
            while data := os.read(0, BUFFER):
                sock.sendall(data)
        except OSError:
            pass
        try:  # noqa: SIM105  (not contextlib.suppress: one more import on every `ssh`)
            sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass

    _thread.start_new_thread(upstream, ())
    data = first
    try:
        while data:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
            data = sock.recv(BUFFER)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # At once: OpenSSH waits for its ProxyCommand, and tearing the interpreter down
    # (a thread still blocked on stdin, every module) takes longer than the whole relay.
    os._exit(status)
