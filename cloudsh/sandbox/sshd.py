"""One SSH server per running sandbox instance (asyncssh, on the box's own 127.x.y.z address).

An instance is a directory tree, `<sandbox>/instances/<id>/`:

    ssh_host_ed25519_key   its host key (made at first boot; survives stop/start)
    authorized_keys        its key pair's public key, copied at first boot as cloud-init does
    root/                  the box's own files: home/ubuntu, tmp, mnt
    bin/                   stand-ins for tools the box has (nvidia-smi once it has the driver)

Frozen images are trees too: if `<sandbox>/images/<image-id>/root` exists, a new instance
starts with a copy of it instead of an empty tree.

Commands run on this machine as `bash -lc CMD` (or a login shell), inside bubblewrap when
it works here: the host's filesystem read-only, the tree's home/tmp/mnt bound over
/home, /tmp, /mnt, and the sandbox dir and the real user's home hidden, so a box can
neither see nor change the user's files. Each box has its own network namespace with its
own loopback; port forwards are opened inside it (sandbox/netns.py). Without bubblewrap the
box's localhost is this machine's loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from cloudsh.sandbox import cron, devices, persist, poweroff
from cloudsh.sandbox import gpu as gpus
from cloudsh.sandbox.firewall import Gate
from cloudsh.sandbox.gpu import Gpu
from cloudsh.sandbox.netns import (
    BWRAP_BASE,
    BWRAP_LIFETIME,
    SSH_PORT,
    SYSTEM_DIRS,
    NetnsLink,
    enter_argv,
    forward,
    start_init,
)

log = logging.getLogger("cloudsh.sandbox.sshd")

USER = "ubuntu"
#: PATH of a fresh Ubuntu login; the host's PATH (venvs, pyenv shims) must not leak in.
UBUNTU_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin"
#: Where the tool stand-ins appear inside bubblewrap: in every Ubuntu PATH, and empty on
#: a stock system, so binding over it hides nothing.
BOX_TOOLS_DIR = "/usr/local/sbin"
# Linux ioctls the termios module lacks: unlock a pty, and open its peer by fd (no path
# lookup, which would fail across mount namespaces).
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441


def public_key_line(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 AAAA...` without a comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class Box:
    """One instance: its tree, host key and (while it runs) its SSH server."""

    def __init__(
        self, sandbox_dir: Path, instance_id: str, *, isolation: str, hostname: str = ""
    ) -> None:
        self.sandbox_dir = sandbox_dir
        self.instance_id = instance_id
        self.isolation = isolation
        self.hostname = hostname or f"ip-{instance_id}"
        self.dir = sandbox_dir / "instances" / instance_id
        self.root = self.dir / "root"
        self.tools = self.dir / "bin"
        self.port: int | None = None
        #: The address its SSH server listens on (its public address, sandbox/addresses.py).
        self.address = "127.0.0.1"
        #: Ports of the daemon's services the box reaches at the same port on its own
        #: 127.0.0.1 (the instance metadata service).
        self.relay_ports: tuple[int, ...] = ()
        self._netns: NetnsLink | None = None
        self._server: asyncssh.SSHAcceptor | None = None
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self._pids: set[int] = set()
        self._host_key: asyncssh.SSHKey | None = None
        self._authorized: list[asyncssh.SSHKey] = []
        #: Keys EC2 Instance Connect pushed, with when they stop counting (monotonic).
        self._pushed: list[tuple[asyncssh.SSHKey, float]] = []
        self._init: subprocess.Popen[bytes] | None = None
        self._init_pid = 0
        self._prepare_lock = threading.Lock()
        self.has_gpu = False
        #: This box's instance metadata (sandbox/imds.py), given to its sessions as
        #: CLOUDSH_IMDS_ENDPOINT; on EC2 it is http://169.254.169.254.
        self.imds_endpoint = ""

    # -- files ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    def host_key(self) -> asyncssh.SSHKey:
        if self._host_key is None:
            path = self.dir / "ssh_host_ed25519_key"
            if path.exists():
                self._host_key = asyncssh.read_private_key(path)
            else:
                self.dir.mkdir(parents=True, exist_ok=True)
                key = asyncssh.generate_private_key("ssh-ed25519", comment=f"root@{self.instance_id}")
                key.write_private_key(path)
                path.chmod(0o600)
                self._host_key = key
        return self._host_key

    def host_key_line(self) -> str:
        return public_key_line(self.host_key())

    def known_host_key_line(self) -> str:
        """The host key once first boot made it, else "" (never generates one)."""
        return public_key_line(self._host_key) if self._host_key is not None else ""

    def prepare(
        self,
        *,
        image_id: str,
        public_key: str | None,
        gpu: Gpu | None | Callable[[], Gpu | None],
        image_driver: bool = False,
    ) -> None:
        """First boot makes the tree and installs the key pair; every boot refreshes tools.

        Runs in a worker thread that a cancelled boot cannot stop, so two prepares of one
        box (stop/resize/start in quick succession) take turns, and `gpu` may be a callable
        read under the lock: whichever runs last installs the tools of the current type.
        `image_driver`: the box's image has the NVIDIA driver (recorded at first boot).
        """
        with self._prepare_lock:
            self._prepare(
                image_id=image_id, public_key=public_key, gpu=gpu() if callable(gpu) else gpu,
                image_driver=image_driver,
            )

    def _prepare(self, *, image_id: str, public_key: str | None, gpu: Gpu | None, image_driver: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.root.exists():
            image_root = self.sandbox_dir / "images" / image_id / "root"
            if image_root.is_dir():
                shutil.copytree(image_root, self.root, symlinks=True)
            if image_driver:
                gpus.record_driver(self.root, "from its image")
            for sub in ("home/ubuntu", "tmp", "mnt"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").chmod(0o1777)
        auth = self.dir / "authorized_keys"
        if not auth.exists() and public_key:
            auth.write_text(public_key.strip() + "\n")
        self._authorized = []
        if auth.exists():
            for line in auth.read_text().splitlines():
                with contextlib.suppress(asyncssh.KeyImportError, ValueError):
                    if line.strip():
                        self._authorized.append(asyncssh.import_public_key(line.strip()))
        shutil.rmtree(self.tools, ignore_errors=True)
        self.has_gpu = gpu is not None
        gpus.install_tools(self.tools, self.root, gpu, self.instance_id, isolated=self.isolation == "bubblewrap")
        # Block-device stand-ins, so volumes attach, format and mount (sandbox/devices.py).
        devices.install_tools(
            self.tools, self.sandbox_dir, self.instance_id, isolated=self.isolation == "bubblewrap"
        )
        cron.install_tool(self.tools, self.root, isolated=self.isolation == "bubblewrap")
        poweroff.install_tools(self.tools, self.imds_endpoint)
        self._write_identity()
        self.host_key()

    def _write_identity(self) -> None:
        """passwd/group files that name uid 1000 `ubuntu`, bound over /etc's in the box."""
        etc = self.dir / "etc"
        etc.mkdir(exist_ok=True)
        for name, line in (
            ("passwd", "ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash"),
            ("group", "ubuntu:x:1000:"),
        ):
            try:
                host = Path("/etc", name).read_text().splitlines()
            except OSError:
                host = []
            kept = [h for h in host if h.split(":")[2:3] != ["1000"] and not h.startswith("ubuntu:")]
            (etc / name).write_text("\n".join([*kept, line]) + "\n")

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def authorized(self, username: str, key: asyncssh.SSHKey) -> bool:
        now = time.monotonic()
        pushed = [k for k, until in self._pushed if until > now]
        return username == USER and any(k.public_data == key.public_data for k in [*self._authorized, *pushed])

    def push_key(self, username: str, key_line: str, seconds: float) -> None:
        """Accept `key_line` for `seconds` (EC2 Instance Connect; sandbox/instance_connect.py)."""
        if username != USER:
            return  # the key is for a user this box does not have: never accepted
        with contextlib.suppress(asyncssh.KeyImportError, ValueError):
            key = asyncssh.import_public_key(key_line.strip())
            now = time.monotonic()
            self._pushed = [(k, t) for k, t in self._pushed if t > now] + [(key, now + seconds)]

    # -- server ---------------------------------------------------------------------------

    async def start(self, address: str, port: int = 0) -> int:
        """Boot the box and listen on `address`, at port 22 if the sandbox may bind it, else
        at `port` (or any free port if that is taken too); returns the port."""
        self.address = address
        if self.isolation == "bubblewrap" and self._init is None:
            await self._start_init()
        if self._init is not None and self._netns is None:
            netns = NetnsLink(self._init_pid, self.relay_ports)
            await netns.start()
            self._netns = netns
        kwargs: dict[str, Any] = dict(
            server_host_keys=[self.host_key()],
            process_factory=self._handle,
            sftp_factory=lambda chan: _BoxSFTPServer(chan, chroot=str(self.root).encode()),
            allow_scp=True,
            encoding=None,
            line_editor=False,
            agent_forwarding=False,
            x11_forwarding=False,
            keepalive_interval=30,
            tunnel=Gate(self.instance_id),  # its security groups decide who connects
        )
        if cipher := os.environ.get("CLOUDSH_SANDBOX_SSH_CIPHER"):  # one cipher, no compression (benchmarks)
            kwargs.update(encryption_algs=[cipher], compression_algs=["none"])
        server = None
        for candidate in dict.fromkeys((SSH_PORT, port, 0)):
            try:
                server = await asyncssh.create_server(lambda: _Server(self), address, candidate, **kwargs)
                break
            except OSError:
                if not candidate:
                    raise
        assert server is not None
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def run_at_boot(self) -> None:
        """Mount the fstab's volumes (`devices.py`), then start what cron starts at boot:
        the crontab's `@reboot` lines (`cron.py`)."""
        home = "/home/ubuntu" if self.isolation == "bubblewrap" else str(self.root / "home/ubuntu")
        env = {"LANG": "C.UTF-8", "PATH": UBUNTU_PATH, "HOME": home, "USER": USER, "LOGNAME": USER}
        if self.imds_endpoint:
            env["CLOUDSH_IMDS_ENDPOINT"] = self.imds_endpoint
        cwd = home if self._init is None else None
        await devices.mount_at_boot(self._argv, env, cwd)
        await cron.run_at_boot(self.root, self._argv, env, cwd, self._pids)

    async def stop(self) -> None:
        """Stop listening, drop every session and kill everything running on the box."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.close()
        self.kill_processes()
        netns, self._netns = self._netns, None
        if netns is not None:
            await netns.close()
        await asyncio.to_thread(self._stop_init)
        if server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)

    def kill_processes(self) -> None:
        for pid in list(self._pids):
            # Each session leads its own process group. Without bubblewrap, what a
            # session left running in another group survives this; with it, stopping
            # the box's init ends them all.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._untrack(pid)

    def _track(self, pid: int) -> None:
        self._pids.add(pid)
        persist.record(self.sandbox_dir, pid)  # ended at the next start if the daemon is killed

    def _untrack(self, pid: int) -> None:
        self._pids.discard(pid)
        persist.forget(self.sandbox_dir, pid)

    # -- commands -------------------------------------------------------------------------

    def _argv(self, command: str | None) -> list[str]:
        tools = BOX_TOOLS_DIR if self.isolation == "bubblewrap" else str(self.tools)
        # /etc/profile resets PATH, so the tool stand-ins are put first after it ran.
        prefix = f'PATH="{tools}:$PATH"\n' if self.tools.is_dir() else ""
        if command is None:
            argv = ["bash", "-l"] if not prefix else ["bash", "-lc", prefix + "exec bash -i"]
        else:
            argv = ["bash", "-lc", prefix + command]
        if self._init is None:
            return argv
        return [*enter_argv(self._init_pid), *argv]

    def _init_argv(self) -> list[str]:
        """The box's bubblewrap "machine": namespaces that live while the box runs."""
        wrap = list(BWRAP_BASE)
        for hidden in (Path.home(), self.sandbox_dir):  # in case they live under the OS's dirs
            if hidden != Path("/") and any(hidden.is_relative_to(d) for d in SYSTEM_DIRS):
                wrap += ["--tmpfs", str(hidden)]
        wrap += devices.bwrap_binds(self.sandbox_dir, self.instance_id)  # volumes, after the tmpfs
        (self.root / gpus.DRIVER_DIR).mkdir(parents=True, exist_ok=True)
        wrap += ["--bind", str(self.root / gpus.DRIVER_DIR), gpus.BOX_DRIVER_DIR]  # the driver stand-in's record
        wrap += cron.bwrap_binds(self.root)
        for sub in ("home", "tmp", "mnt"):
            wrap += ["--bind", str(self.root / sub), f"/{sub}"]
        if self.tools.is_dir() and Path(BOX_TOOLS_DIR).is_dir():
            wrap += ["--ro-bind", str(self.tools), BOX_TOOLS_DIR]
        for name in ("passwd", "group"):
            if (self.dir / "etc" / name).is_file():
                wrap += ["--ro-bind", str(self.dir / "etc" / name), f"/etc/{name}"]
        # Last, once every mount point exists: as on EC2, `ubuntu` writes no file of / or /etc.
        return [*wrap, "--remount-ro", "/", "--hostname", self.hostname, "--chdir", "/home/ubuntu", *BWRAP_LIFETIME]

    async def _start_init(self) -> None:
        init, self._init_pid = await asyncio.to_thread(start_init, self._init_argv())
        self._init = init
        persist.record(self.sandbox_dir, init.pid)

    def _open_pty(self) -> tuple[int, int]:
        """A pty from the box's own /dev/pts, so `tty` and ttyname() work inside the box."""
        if self._init is not None:
            try:
                master = os.open(f"/proc/{self._init_pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
            except OSError:
                return os.openpty()
            try:
                fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
                slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
            except OSError:
                os.close(master)
                return os.openpty()
            return master, slave
        return os.openpty()

    def _stop_init(self) -> None:
        init, self._init = self._init, None
        if init is not None:
            # Killing bubblewrap ends the box's pid namespace: every process in it dies,
            # including what users left running with nohup or setsid.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(init.pid, signal.SIGKILL)
            init.wait()
            persist.forget(self.sandbox_dir, init.pid)

    def _env(self, process: asyncssh.SSHServerProcess[bytes]) -> tuple[dict[str, str], str]:
        home = "/home/ubuntu" if self.isolation == "bubblewrap" else str(self.root / "home/ubuntu")
        env = {"LANG": "C.UTF-8", "PATH": UBUNTU_PATH}
        for key, value in process.env.items():
            k = key.decode() if isinstance(key, bytes) else str(key)
            v = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            env[k] = v
        env.update(HOME=home, USER=USER, LOGNAME=USER, SHELL="/bin/bash")
        if self.imds_endpoint:
            env["CLOUDSH_IMDS_ENDPOINT"] = self.imds_endpoint
        term = process.get_terminal_type()
        if term:
            env["TERM"] = term
        return env, home

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        try:
            status = await self._run(process)
        except Exception:
            log.exception("%s: session failed", self.instance_id)
            status = 255
        if status < 0:
            try:
                name = signal.Signals(-status).name.removeprefix("SIG")
            except ValueError:
                name = "KILL"
            process.exit_with_signal(name)
        else:
            process.exit(status)

    async def _run(self, process: asyncssh.SSHServerProcess[bytes]) -> int:
        argv = self._argv(process.command)
        env, home = self._env(process)
        if process.get_terminal_type():
            return await self._run_pty(process, argv, env, home)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=home if self._init is None else None,
            start_new_session=True,
        )
        self._track(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        async def feed(data: bytes) -> None:
            stdin.write(data)
            await stdin.drain()

        pumps = [
            asyncio.ensure_future(_pump_out(proc.stdout, process.stdout, proc.pid)),
            asyncio.ensure_future(_pump_out(proc.stderr, process.stderr, proc.pid)),
        ]
        feeder = asyncio.ensure_future(
            _pump_in(process, feed, stdin.close, proc.pid, resize=None)
        )
        try:
            status = await proc.wait()
            await asyncio.gather(*pumps)
        finally:
            feeder.cancel()
            self._untrack(proc.pid)
        return status

    async def _run_pty(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        argv: list[str],
        env: dict[str, str],
        home: str,
    ) -> int:
        master, slave = self._open_pty()
        _set_winsize(master, process.term_size)
        try:
            # `setsid -c` makes the pty the session's controlling terminal, so job
            # control and ^C work in an interactive shell.
            proc = await asyncio.create_subprocess_exec(
                "setsid", "-w", "-c", *argv,
                stdin=slave, stdout=slave, stderr=slave, env=env,
                cwd=home if self._init is None else None,
            )
        finally:
            os.close(slave)
        self._track(proc.pid)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        read_t, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", buffering=0)
        )
        write_t, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0)
        )

        async def feed(data: bytes) -> None:
            write_t.write(data)

        out = asyncio.ensure_future(_pump_out(reader, process.stdout, proc.pid))
        feeder = asyncio.ensure_future(
            _pump_in(process, feed, lambda: None, proc.pid, resize=lambda s: _set_winsize(master, s))
        )
        try:
            status = await proc.wait()
            # Background jobs may keep the pty open; do not hang the session on them.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(out), 1.0)
        finally:
            out.cancel()
            feeder.cancel()
            read_t.close()
            write_t.close()
            self._untrack(proc.pid)
        return status


async def _pump_out(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes], pid: int) -> None:
    while True:
        try:
            data = await reader.read(65536)
        except OSError:  # a pty master reads EIO once the last process on it closed it
            return
        if not data:
            return
        try:
            writer.write(data)
            await writer.drain()
        except (OSError, asyncssh.Error):
            # The client went away: hang up on the command, as sshd does.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGHUP)
            return


async def _pump_in(
    process: asyncssh.SSHServerProcess[bytes],
    feed: Callable[[bytes], Any],
    close: Callable[[], None],
    pid: int,
    *,
    resize: Callable[[tuple[int, int, int, int]], None] | None,
) -> None:
    while True:
        try:
            data = await process.stdin.read(65536)
        except asyncssh.TerminalSizeChanged as exc:
            if resize is not None:
                resize(exc.term_size)
            continue
        except asyncssh.SignalReceived as exc:
            sig = getattr(signal, f"SIG{exc.signal}", None)
            if sig is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
            continue
        except asyncssh.BreakReceived:
            continue
        except (OSError, asyncssh.Error):
            break
        if not data:
            break
        try:
            await feed(data)
        except (OSError, RuntimeError):  # the command exited and closed its stdin
            break
    with contextlib.suppress(OSError, RuntimeError):
        close()


def _set_winsize(fd: int, size: tuple[int, int, int, int]) -> None:
    width, height, pixw, pixh = size
    if width and height:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixw, pixh))


class _Server(asyncssh.SSHServer):
    def __init__(self, box: Box) -> None:
        self.box = box
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.box._conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.box._conns.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self.box.authorized(username, key)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        # Forwards reach only the box's own localhost, inside its namespace.
        box = self.box
        return forward(box._netns, dest_host, dest_port, orig_host, orig_port, isolated=box.isolation == "bubblewrap")

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False


class _BoxSFTPServer(asyncssh.SFTPServer):
    """SFTP rooted at the box's tree; relative paths start at /home/ubuntu, as on Ubuntu."""

    def map_path(self, path: bytes) -> bytes:
        if not path.startswith(b"/"):
            path = b"/home/ubuntu/" + path
        return super().map_path(path)

    def exit(self) -> None:
        # OpenSSH's sftp-server ends with exit status 0 and `scp` (SFTP mode) fails
        # without one; asyncssh would just close the channel.
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.exit(0)
