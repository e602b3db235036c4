"""A box's namespaces: bubblewrap's flags, its init, and the sockets the daemon opens in its network.

With bubblewrap each box runs in its own network namespace (`--unshare-net`): its own
loopback, no other interface. Its SSH server runs in the daemon, outside, so port forwards
(`ssh -L`, `cloudsh tunnel`) are opened inside by a small helper started in the box's
namespace (sandbox/tools/netns.py), which passes each connected socket back over a Unix
socketpair. A forward reaches only what listens in that box, and one to a port nothing
serves there is refused at once. The helper also listens on the box's 127.0.0.1 at the
ports of the daemon's services a box uses (the instance metadata service) and hands each
connection up, to be carried to the same port outside.

Without bubblewrap there is no namespace: forwards connect on this machine's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncssh
from asyncssh.forward import SSHForwarder

log = logging.getLogger("cloudsh.sandbox.netns")

HELPER = Path(__file__).with_name("tools") / "netns.py"
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
START_TIMEOUT_S = 10.0
#: Longer than the helper's own connect timeout, which answers first.
CONNECT_TIMEOUT_S = 15.0
#: Where boxes' SSH servers listen when the sandbox may bind it, as on EC2.
SSH_PORT = 22


#: What of this machine a box sees, read-only: its OS (programs, libraries, and the files
#: of /etc a login and common tools read). Nothing of its users, projects, services or
#: cloudsh's own state: no other home, /root, /opt, /srv, /var or checkout.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_ETC = frozenset({
    "alternatives", "bash.bashrc", "bash_completion", "bash_completion.d", "ca-certificates",
    "debian_version", "environment", "gai.conf", "host.conf", "hosts", "inputrc", "issue",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "locale.alias", "localtime", "login.defs",
    "lsb-release", "magic", "magic.mime", "mailcap", "mime.types", "networks", "nsswitch.conf",
    "os-release", "profile", "profile.d", "protocols", "resolv.conf", "services", "shells", "skel",
    "ssl", "terminfo", "timezone", "vim", "xdg",
})
#: The environment of the box's first process: nothing of the daemon's (which may hold the
#: user's AWS keys), as a machine's init starts with none of its users' variables.
INIT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def system_view() -> list[str]:
    """bubblewrap arguments for the OS part of a box's filesystem (see `SYSTEM_DIRS`)."""
    args = ["bwrap"]
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():  # /bin -> usr/bin on merged-/usr systems
            args += ["--symlink", os.readlink(path), name]
        elif path.is_dir():
            args += ["--ro-bind", name, name]
    args += ["--dir", "/etc"]
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir("/etc")):
            if entry in SYSTEM_ETC or entry.startswith("python3"):
                args += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run", "--tmpfs", "/var", "--dir", "/var/tmp"]
    return args + [arg for d in ("/home", "/tmp", "/mnt") for arg in ("--dir", d)]


BWRAP_BASE = system_view()
#: Inside, the user is `ubuntu` (uid 1000) and the box has its own hostname, as on EC2.
BWRAP_LIFETIME = [
    "--unshare-user", "--uid", "1000", "--gid", "1000", "--unshare-uts",
    "--unshare-pid", "--unshare-net", "--die-with-parent",
]


def start_init(wrap: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start `wrap -- sleep infinity`; returns bubblewrap's process and the box's pid 1 child.

    Commands join this box with `nsenter` (see `enter_argv`), so what they leave running
    outlives their SSH session, as on a machine, and dies with the box.
    """
    read_fd, write_fd = os.pipe()
    try:
        # The box is only set up once its first process runs: it says so on stdout.
        proc = subprocess.Popen(
            [*wrap, "--info-fd", str(write_fd), "--", "sh", "-c", "echo up; exec sleep infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(write_fd,), start_new_session=True, env=INIT_ENV,
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as info:
        raw = info.read()  # bubblewrap closes it once the namespaces exist
    assert proc.stdout is not None
    up = proc.stdout.readline()
    try:
        if up.strip() != b"up":
            raise ValueError("no ready line")
        return proc, int(json.loads(raw)["child-pid"])
    except (ValueError, KeyError) as exc:
        proc.kill()
        err = proc.communicate(timeout=5)[1].decode(errors="replace").strip()
        raise OSError(f"bubblewrap did not start: {err or exc}") from None


def enter_argv(child_pid: int) -> list[str]:
    return [
        "nsenter", "-t", str(child_pid), "-U", "-m", "-p", "-u", "-n",
        "-S", "1000", "-G", "1000", "--preserve-credentials", "-w", "-r", "--",
    ]


def bubblewrap_works() -> bool:
    """Try the exact flags boxes use once; some kernels forbid user namespaces."""
    if shutil.which("bwrap") is None or shutil.which("nsenter") is None:
        return False
    try:
        init, child = start_init([*BWRAP_BASE, *BWRAP_LIFETIME])
    except OSError:
        return False
    try:
        done = subprocess.run(
            [*enter_argv(child), "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10
        )
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(init.pid, signal.SIGKILL)
        init.wait()


class NetnsLink:
    """The daemon's end of one box's namespace helper."""

    def __init__(self, init_pid: int, relay_ports: tuple[int, ...] = ()) -> None:
        self.init_pid = init_pid
        self.relay_ports = relay_ports
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[socket.socket]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [
                    "nsenter", "-t", str(self.init_pid), "-U", "-n", "-S", "1000", "-G", "1000", "--preserve-credentials", "--",
                    sys.executable, "-I", str(HELPER), str(theirs.fileno()), *map(str, self.relay_ports),
                ],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), start_new_session=True,
            )
        finally:
            theirs.close()
        mine.setblocking(False)
        self._sock = mine
        self._ready = loop.create_future()
        loop.add_reader(mine.fileno(), self._readable)
        try:
            await asyncio.wait_for(self._ready, START_TIMEOUT_S)
        except (TimeoutError, OSError):
            await self.close()
            raise OSError("the box's network helper did not start") from None
        except asyncio.CancelledError:  # the box stopped while it booted
            self._gone()
            self._kill()
            raise

    async def connect(self, host: str, port: int) -> socket.socket:
        """A TCP connection to `host`:`port` as seen from inside the box."""
        if self._sock is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "the box is not running")
        req_id = str(next(self._ids))
        fut: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            self._sock.send(f"{req_id} {host} {port}".encode())
            return await asyncio.wait_for(fut, CONNECT_TIMEOUT_S)
        finally:
            self._pending.pop(req_id, None)

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            msg, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        if not msg:
            self._gone()
            return
        sock = socket.socket(fileno=fds[0]) if fds else None
        words = msg.decode(errors="replace").split(" ", 3)
        if words[0] == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif words[0] == "accept" and sock is not None:
            task = asyncio.ensure_future(_relay(sock, int(words[1])))
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
            return
        else:
            fut = self._pending.get(words[0])
            if fut is not None and not fut.done():
                if sock is not None and words[1:2] == ["ok"]:
                    fut.set_result(sock)
                    return
                code = int(words[2]) if len(words) > 2 and words[2].isdigit() else errno.ECONNREFUSED
                fut.set_exception(OSError(code, words[3] if len(words) > 3 else os.strerror(code)))
        if sock is not None:
            sock.close()

    def _gone(self) -> None:
        """The helper ended (the box stopped): nothing more can be opened in the box."""
        if self._sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(OSError("the box's network helper ended"))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionRefusedError(errno.ECONNREFUSED, "the box is not running"))

    async def close(self) -> None:
        self._gone()
        for task in list(self._relays):
            task.cancel()
        await asyncio.to_thread(self._kill)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


async def _relay(inside: socket.socket, port: int) -> None:
    """Carry one connection made in a box to the same port on this machine's loopback."""
    try:
        in_reader, in_writer = await asyncio.open_connection(sock=inside)
    except OSError:
        inside.close()
        return
    try:
        out_reader, out_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        in_writer.close()
        return
    await asyncio.gather(_pipe(in_reader, out_writer), _pipe(out_reader, in_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
    except asyncio.CancelledError:
        writer.close()
        raise


#: Without a namespace: the connections forwards opened on this machine's loopback, by
#: local port. A forward whose originator is one of them came back round through a
#: listener here (a tunnel whose local and remote ports are equal) and is refused rather
#: than followed round again.
_opened_here: dict[int, asyncio.BaseTransport] = {}


def forward(
    link: NetnsLink | None, dest_host: str, dest_port: int, orig_host: str, orig_port: int, *, isolated: bool
) -> object:
    """What the box's SSH server answers to a direct-tcpip request (asyncssh's
    `connection_requested`): only the box's own localhost is reachable; with a namespace
    the connection is opened inside it (never here, even while the box stops), without
    one on this machine's loopback."""
    if dest_host not in LOOPBACK:
        return False
    if link is not None:
        return _forward_inside(link, dest_host, dest_port)
    if isolated:
        return False
    for port, transport in list(_opened_here.items()):
        if transport.is_closing():
            del _opened_here[port]
    if orig_host in LOOPBACK and orig_port in _opened_here:
        return False
    return _forward_here(dest_host, dest_port)


async def _forward_here(dest_host: str, dest_port: int) -> SSHForwarder:
    try:
        transport, peer = await asyncio.get_running_loop().create_connection(SSHForwarder, dest_host, dest_port)
    except OSError as exc:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
    _opened_here[transport.get_extra_info("sockname")[1]] = transport
    return SSHForwarder(peer)


async def _forward_inside(link: NetnsLink, dest_host: str, dest_port: int) -> SSHForwarder:
    try:
        sock = await link.connect(dest_host, dest_port)
    except (TimeoutError, OSError) as exc:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc) or "Connection timed out") from None
    try:
        _, peer = await asyncio.get_running_loop().create_connection(SSHForwarder, sock=sock)
    except OSError as exc:
        sock.close()
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
    return SSHForwarder(peer)
