"""A small real SSH server for tests: asyncssh on 127.0.0.1.

Commands run with `bash -c` in the server's root directory (a shell, for sessions
without a command), SFTP is chrooted to that root, direct-tcpip forwarding is allowed,
and one ed25519 client key is authorized. It counts connections and can drop them or
come back on the same port with a new host key, so tests can exercise the client's pool
and host key policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from cloudsh.config import Settings
from cloudsh.models import HostInfo


def write_client_key(path: Path) -> str:
    """An ed25519 key in OpenSSH format at `path` (0600) plus `.pub`; returns the public line."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    key.write_private_key(str(path))
    path.chmod(0o600)
    public = key.export_public_key().decode().strip()
    path.with_name(path.name + ".pub").write_text(public + "\n")
    return public


def public_line(key: asyncssh.SSHKey) -> str:
    return " ".join(key.export_public_key().decode().split()[:2])


class _Server(asyncssh.SSHServer):
    def __init__(self, owner: TestSSHServer) -> None:
        self.owner = owner
        self.conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.owner.connections += 1
        self.owner.live.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.owner.live.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        self.owner.auth_attempts += 1
        return True

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return True


class _SFTPServer(asyncssh.SFTPServer):
    def exit(self) -> None:
        # Send an exit status as OpenSSH's sftp-server does: OpenSSH's scp (SFTP mode)
        # exits 1 when the session ends without one.
        with contextlib.suppress(OSError, asyncssh.Error):
            self.channel.exit(0)


class TestSSHServer:
    __test__ = False  # not a test class, whatever its name

    def __init__(self, root: Path, client_public_key: str) -> None:
        self.root = root
        self.client_public_key = client_public_key
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.port = 0
        self.connections = 0
        self.auth_attempts = 0
        self.live: set[asyncssh.SSHServerConnection] = set()
        self.term_sizes: list[tuple[int, int]] = []
        self._acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def host_key_line(self) -> str:
        return public_line(self.host_key)

    async def start(self) -> None:
        self._acceptor = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_factory=lambda: _Server(self),
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(self.client_public_key + "\n"),
            process_factory=self._handle,
            sftp_factory=lambda chan: _SFTPServer(chan, chroot=os.fsencode(self.root)),
            encoding=None,
            line_editor=False,
            allow_scp=True,
        )
        self.port = self._acceptor.get_port()

    def drop_connections(self) -> None:
        for conn in list(self.live):
            conn.abort()

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        self.drop_connections()

    async def restart(self, *, new_host_key: bool = False) -> None:
        await self.stop()
        if new_host_key:
            self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        await self.start()

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        argv = (
            ["bash", "-c", process.command]
            if process.command
            else ["bash", "--norc", "--noprofile"]
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.root,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout and proc.stderr

        def killpg(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

        async def pump_in() -> None:
            assert proc.stdin
            while True:
                try:
                    data = await process.stdin.read(65536)
                except asyncssh.TerminalSizeChanged as exc:
                    self.term_sizes.append((exc.width, exc.height))
                    continue
                except asyncssh.SignalReceived as exc:
                    killpg(getattr(signal, f"SIG{exc.signal}", signal.SIGTERM))
                    continue
                except (asyncssh.BreakReceived, asyncssh.SoftEOFReceived):
                    continue
                except (asyncssh.Error, OSError):
                    break
                if not data:
                    break
                try:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    break
            with contextlib.suppress(OSError):
                proc.stdin.close()

        async def pump_out(src: asyncio.StreamReader, dst: Any) -> None:
            while data := await src.read(65536):
                try:
                    dst.write(data)
                except (OSError, asyncssh.Error):
                    return

        if process.get_terminal_type():
            self.term_sizes.append(process.get_terminal_size()[:2])
        feeding = asyncio.ensure_future(pump_in())
        output = asyncio.ensure_future(
            asyncio.gather(
                pump_out(proc.stdout, process.stdout), pump_out(proc.stderr, process.stderr)
            )
        )
        exited = asyncio.ensure_future(proc.wait())
        closed = asyncio.ensure_future(process.channel.wait_closed())
        await asyncio.wait({exited, closed}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            # The client went away: do what sshd does with a dead session's command.
            killpg(signal.SIGKILL)
            await exited
        await output
        feeding.cancel()
        closed.cancel()
        code = proc.returncode or 0
        with contextlib.suppress(OSError, asyncssh.Error):
            if code < 0:
                process.exit_with_signal(signal.Signals(-code).name[3:])
            else:
                process.exit(code)


@dataclass
class SSHEnv:
    settings: Settings
    server: TestSSHServer
    root: Path

    def host(
        self, alias: str = "i-0test", name: str = "box", expected: tuple[str, ...] = ()
    ) -> HostInfo:
        return HostInfo(
            instance_id=alias,
            name=name,
            host="127.0.0.1",
            port=self.server.port,
            user="ubuntu",
            key_path=str(self.settings.key_path),
            host_key_alias=alias,
            expected_host_keys=expected,
        )


@pytest.fixture
async def ssh_env(tmp_path: Path) -> Any:
    settings = Settings(
        config_dir=tmp_path / "config",
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        ssh_connect_timeout_s=5.0,
    )
    public = write_client_key(settings.key_path)
    root = tmp_path / "box"
    root.mkdir()
    server = TestSSHServer(root, public)
    await server.start()
    try:
        yield SSHEnv(settings, server, root)
    finally:
        await server.stop()
