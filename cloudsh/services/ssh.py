"""asyncssh engine: pooled connections, commands, SFTP, port forwards, readiness probes.

Host keys are pinned per instance id in cloudsh's own known_hosts file (see
`known_hosts.py`) and checked during key exchange, before cloudsh authenticates: a
pinned box must present a pinned key; a new box must present one of the keys learnt
out of band (EC2 console output) if there are any, else it is pinned as unconfirmed
until the console shows it (`ops/reach.py`). A changed key is never accepted silently.

OpenSSH (`connect`, `ssh-config`, rsync/scp) is pointed at the same file with
`HostKeyAlias` (`openssh.py`), so both clients agree on what a box's key is. The
asyncssh terminal session for `connect` without OpenSSH is `ssh_terminal.py`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import asyncssh
from asyncssh.public_key import get_default_public_key_algs

from cloudsh.config import Settings
from cloudsh.errors import CloudshError, HostKeyChanged, SSHError, SSHTimeout
from cloudsh.models import CommandResult, HostInfo
from cloudsh.services.copying import aside, get_target, merge_tree, put_target, remote_kind, remove
from cloudsh.services.forward import Forward as Forward
from cloudsh.services.known_hosts import KnownHosts, fingerprint, forget_hint, normalize_key
from cloudsh.services.openssh import KEEPALIVE_COUNT, KEEPALIVE_S
from cloudsh.services.ports import port_holder

#: AES-GCM first: AES-NI makes it the fastest cipher on x86 and Graviton alike;
#: chacha20 wins only on CPUs without AES instructions.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)

CHUNK = 65536
BOOT_HINT = "it may still be booting: wait, or check `cloudsh ls`"

PoolKey = tuple[str, int, str, str]
T = TypeVar("T")
OutputCallback = Callable[[str], None]


def _key_line(key: asyncssh.SSHKey) -> str:
    return normalize_key(key.export_public_key("openssh").decode())


def _import_keys(lines: Sequence[str]) -> list[asyncssh.SSHKey]:
    keys: list[asyncssh.SSHKey] = []
    for line in lines:
        # A malformed expected key is ignored rather than trusted or fatal.
        with contextlib.suppress(asyncssh.KeyImportError, ValueError):
            keys.append(asyncssh.import_public_key(normalize_key(line)))
    return keys


def _host_key_algs(trusted: Sequence[asyncssh.SSHKey]) -> list[str]:
    """Ask first for the algorithms of the keys we trust, then ed25519, then the rest.

    Offering every algorithm (not only the trusted ones) lets a box that now has a
    different key type fail with a clear "host key changed", not a bare kex failure.
    """
    order: list[bytes] = []
    for key in trusted:
        order.extend(key.sig_algorithms)
    order.append(b"ssh-ed25519")
    order.extend(get_default_public_key_algs())
    seen: list[str] = []
    for alg in order:
        name = alg.decode()
        if name not in seen:
            seen.append(name)
    return seen


class _HostKeyPolicy(asyncssh.SSHClient):
    """Sees every host key not in the trusted set, during key exchange (pre-auth)."""

    def __init__(self, accept_unknown: bool) -> None:
        self.accept_unknown = accept_unknown
        self.refused: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        if not self.accept_unknown:
            self.refused = _key_line(key)
        return self.accept_unknown


def exit_status(proc: asyncssh.SSHClientProcess[Any]) -> int | None:
    """The remote command's exit status (128+N when signal N ended it); None if unknown."""
    code = proc.returncode
    if code is None:
        return None
    return 128 - code if code < 0 else code


def stop_process(proc: asyncssh.SSHClientProcess[Any]) -> None:
    """Stop a remote command we no longer wait for: TERM it, then close the channel."""
    if proc.returncode is None:
        with contextlib.suppress(OSError, asyncssh.Error):
            proc.send_signal("TERM")
    proc.close()


def _where(host: HostInfo) -> str:
    return f"{host.name} at {host.host}:{host.port}"


def reach_error(host: HostInfo, exc: BaseException, timeout: float | None = None) -> SSHError:
    """One clear line for a failed connection attempt (never a raw asyncssh/OSError)."""
    if isinstance(exc, asyncssh.PermissionDenied):
        return SSHError(
            f"box {_where(host)} refused cloudsh's key {host.key_path} for user {host.user}",
            "was it launched with cloudsh's key pair? Otherwise check the user name setting",
        )
    if isinstance(exc, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(exc, TimeoutError):
        why = f"no answer within {timeout:g} s" if timeout else "timed out"
    elif isinstance(exc, asyncssh.DisconnectError):
        why = exc.reason or type(exc).__name__
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc) or type(exc).__name__
    else:
        why = str(exc) or type(exc).__name__
    kind = SSHTimeout if isinstance(exc, TimeoutError) else SSHError
    return kind(f"cannot reach box {_where(host)}: {why.rstrip('.').lower()}", BOOT_HINT)


def _host_key_error(host: HostInfo, pinned: Sequence[str], presented: str) -> HostKeyChanged:
    if pinned:
        known, what = ", ".join(fingerprint(k) for k in pinned), "pinned"
        headline = f"host key of box {host.name} has CHANGED"
    else:
        known = ", ".join(fingerprint(k) for k in host.expected_host_keys)
        what = "expected"
        headline = f"host key of box {host.name} does not match the one its cloud published"
    return HostKeyChanged(
        f"{headline}: {what} {known}, presented {fingerprint(presented)}", forget_hint(host.name)
    )


class SSHService:
    """asyncio-native SSH to instances, one pooled connection per (host, port, user, alias)."""

    def __init__(
        self, settings: Settings, *, on_timeout: Callable[[HostInfo], Awaitable[bool]] | None = None
    ) -> None:
        self.settings = settings
        #: Asked after a connection timed out; True means it fixed why (a security group
        #: rule), and the connection is tried once more.
        self.on_timeout = on_timeout
        self.known_hosts = KnownHosts(settings.known_hosts_path)
        self._pool: dict[PoolKey, asyncssh.SSHClientConnection] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Connections opened so far (tests and benchmarks read it).
        self.connections_opened = 0

    # -- connections -------------------------------------------------------------

    async def _open(self, host: HostInfo) -> asyncssh.SSHClientConnection:
        try:
            return await self._open_once(host)
        except SSHTimeout:
            if self.on_timeout is None or not await self.on_timeout(host):
                raise
        return await self._open_once(host)

    async def _open_once(self, host: HostInfo) -> asyncssh.SSHClientConnection:
        if not Path(host.key_path).is_file():
            raise SSHError(
                f"no SSH key at {host.key_path}",
                f"copy {host.key_path} from the machine that launched the box to the same place here "
                "(or run `cloudsh run BOX -- true`: it makes this machine a key and sends it with EC2 Instance Connect)",
            )
        pinned = self.known_hosts.keys(host.host_key_alias)
        trusted = _import_keys(pinned or host.expected_host_keys)
        policy = _HostKeyPolicy(accept_unknown=not pinned and not trusted)
        timeout = self.settings.ssh_connect_timeout_s
        try:
            conn = await asyncssh.connect(
                host.host,
                host.port,
                username=host.user,
                client_factory=lambda: policy,
                known_hosts=(trusted, [], []),
                server_host_key_algs=_host_key_algs(trusted),
                client_keys=[host.key_path],
                agent_path=None,
                config=None,
                preferred_auth="publickey",
                connect_timeout=timeout,
                keepalive_interval=KEEPALIVE_S,
                keepalive_count_max=KEEPALIVE_COUNT,
                encryption_algs=list(CIPHERS),
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            if policy.refused is None:
                raise reach_error(host, exc, timeout) from None
            raise _host_key_error(host, pinned, policy.refused) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            raise reach_error(host, exc, timeout) from None
        self.connections_opened += 1
        server_key = conn.get_server_host_key()
        if not pinned and server_key is not None:
            try:
                # Checked against keys its console showed, or taken on trust until it does.
                self.known_hosts.pin(host.host_key_alias, _key_line(server_key), unconfirmed=not trusted)
            except OSError as exc:
                conn.close()
                raise SSHError(
                    f"cannot save the host key of {host.name} to {self.known_hosts.path}: {exc.strerror}",
                    "check that cloudsh's state directory is writable",
                ) from None
        return conn

    async def _conn(self, host: HostInfo, *, fresh: bool = False) -> asyncssh.SSHClientConnection:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections (and locks) belong to the loop that made them.
            self._pool.clear()
            self._locks.clear()
            self._loop = loop
        key = (host.host, host.port, host.user, host.host_key_alias)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._pool.get(key)
            if conn is not None and (fresh or conn.is_closed()):
                conn.close()
                conn = None
            if conn is None:
                conn = self._pool[key] = await self._open(host)
            return conn

    async def channel(
        self, host: HostInfo, open_: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]
    ) -> T:
        """Open a channel on the pooled connection, reconnecting once if it turned out dead."""
        conn = await self._conn(host)
        try:
            return await open_(conn)
        except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, ConnectionError):
            if not conn.is_closed():
                raise
        conn = await self._conn(host, fresh=True)
        return await open_(conn)

    async def ensure_pinned(self, host: HostInfo) -> None:
        """Connect once (with the host key policy) if nothing is pinned for this box yet."""
        if not self.known_hosts.keys(host.host_key_alias):
            await self._conn(host)

    async def close(self) -> None:
        conns = list(self._pool.values())
        self._pool.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError, asyncssh.Error):
                await conn.wait_closed()

    # -- commands ----------------------------------------------------------------

    async def run(
        self,
        host: HostInfo,
        command: str,
        *,
        stdin: bytes | str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        timeout: float | None = None,
        term: str | None = None,
    ) -> CommandResult:
        """Run `command` on the box, streaming output to the callbacks as it arrives.

        Output is accumulated in the result only for streams without a callback. A
        signal exit becomes 128+n, as in a shell. Cancelling the calling task stops the
        remote command.
        """

        async def open_(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[bytes]:
            return await conn.create_process(
                command, encoding=None, request_pty=bool(term), term_type=term
            )

        try:
            proc = await self.channel(host, open_)
        except (OSError, asyncssh.Error) as exc:
            raise reach_error(host, exc) from None
        out: list[str] = []
        err: list[str] = []

        async def feed() -> None:
            # A command may exit without reading its input (`true`, `head -1`); that is
            # its business, and a lost connection shows up in the output and exit status.
            with contextlib.suppress(OSError, asyncssh.Error):
                if stdin is not None:
                    proc.stdin.write(stdin.encode() if isinstance(stdin, str) else stdin)
                    await proc.stdin.drain()
                proc.stdin.write_eof()

        async def pump(
            stream: asyncssh.SSHReader[bytes], callback: OutputCallback | None, buf: list[str]
        ) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            sink = callback or buf.append
            while chunk := await stream.read(CHUNK):
                if text := decoder.decode(chunk):
                    sink(text)
            if text := decoder.decode(b"", final=True):
                sink(text)

        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(
                    feed(), pump(proc.stdout, on_stdout, out), pump(proc.stderr, on_stderr, err)
                )
                await proc.wait_closed()
        except TimeoutError:
            raise SSHError(
                f"`{command}` on {host.name} did not finish within {timeout:g} s",
                "it was stopped; give it more time or run it as a `cloudsh script`",
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(
                f"lost the connection to {host.name} while running `{command}`: {exc}",
                BOOT_HINT,
            ) from None
        finally:
            stop_process(proc)
        status = exit_status(proc)
        if status is None:
            raise SSHError(
                f"lost the connection to {host.name} while running `{command}`",
                "check the box with `cloudsh ls` and run it again",
            )
        return CommandResult("".join(out), "".join(err), status)

    # -- files -------------------------------------------------------------------

    async def _sftp(self, host: HostInfo) -> asyncssh.SFTPClient:
        async def open_(conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
            return await conn.start_sftp_client()

        try:
            return await self.channel(host, open_)
        except (OSError, asyncssh.Error) as exc:
            raise reach_error(host, exc) from None

    async def put_target(self, host: HostInfo, local: Path, remote: str) -> tuple[str, str | None]:
        """Where `put` of `local` to `remote` writes, and what is there now ("file", "dir"
        or None): a directory at the path given (`copying.dir_target`), so `put box proj
        proj` twice replaces `proj` and never makes `proj/proj`; a file into a directory."""
        sftp = await self._sftp(host)
        try:
            return await put_target(sftp, Path(local), remote)
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(f"cannot look at {host.name}:{remote}: {exc}", BOOT_HINT) from None
        finally:
            sftp.exit()

    async def remote_kind(self, host: HostInfo, remote: str) -> str | None:
        """"file", "dir" or None (nothing there)."""
        sftp = await self._sftp(host)
        try:
            return await remote_kind(sftp, remote)
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(f"cannot look at {host.name}:{remote}: {exc}", BOOT_HINT) from None
        finally:
            sftp.exit()

    async def put(
        self, host: HostInfo, local: Path, remote: str, *, recursive: bool = True
    ) -> str:
        """Copy `local` to `remote` (see `put_target`), like `scp -r`; returns the path written.

        The upload goes to a hidden temporary name beside the target and is renamed into
        place, so an interrupted copy leaves the old file (or directory) whole. A directory
        replaces the one it is copied over.
        """
        local = Path(local)
        if not local.exists():
            raise CloudshError(f"no such local file or directory: {local}", "check the path")
        if local.is_dir() and not recursive:
            raise CloudshError(f"{local} is a directory", "copy it recursively")
        sftp = await self._sftp(host)
        tmp: str | None = None
        old: str | None = None
        target = remote
        try:
            target, kind = await put_target(sftp, local, remote)
            if kind == "dir" and not local.is_dir():
                raise CloudshError(f"{host.name}:{target} is a directory", "give the file's remote name")
            path = PurePosixPath(target)
            tag = uuid.uuid4().hex[:8]
            tmp = str(path.parent / aside(path.name, "part", tag))
            await sftp.put(str(local), tmp, recurse=recursive, preserve=True)
            if kind is not None and (kind == "dir" or local.is_dir()):
                old = str(path.parent / aside(path.name, "old", tag))
                await sftp.rename(target, old)
            await sftp.posix_rename(tmp, target)  # atomic, over an existing file too
            tmp = None
            if old is not None:
                await remove(sftp, old)
                old = None
            return target
        except asyncssh.SFTPError as exc:
            raise _sftp_error(host, target, exc) from None
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(
                f"copying {local} to {host.name}:{target} failed: {exc}", BOOT_HINT
            ) from None
        finally:
            with contextlib.suppress(OSError, asyncssh.Error):
                if old is not None and not await sftp.exists(target):
                    await sftp.rename(old, target)
                if tmp is not None:
                    await remove(sftp, tmp)
            sftp.exit()

    async def get(
        self, host: HostInfo, remote: str, local: Path | str, *, recursive: bool = True
    ) -> Path:
        """Copy `remote` to `local` (see `get_target`), like `scp -r`.

        The download goes to a hidden temporary name beside the target and is renamed
        into place (file by file when merging into an existing directory), so a final
        name never holds a partial file. Returns the path written.
        """
        sftp = await self._sftp(host)
        tmp: Path | None = None
        try:
            try:
                attrs = await sftp.stat(remote)
            except asyncssh.SFTPError as exc:
                raise _sftp_error(host, remote, exc) from None
            remote_is_dir = attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY
            if remote_is_dir and not recursive:
                raise CloudshError(f"{host.name}:{remote} is a directory", "copy it recursively")
            target = get_target(local, remote, remote_is_dir)
            if not target.parent.is_dir():
                raise CloudshError(f"no such local directory: {target.parent}", "create it first")
            if target.is_dir() and not remote_is_dir:
                raise CloudshError(f"{target} is a directory", "pick another local name")
            tmp = target.parent / aside(target.name, "part", uuid.uuid4().hex[:8])
            await sftp.get(remote, str(tmp), recurse=recursive, preserve=True)
            if remote_is_dir and target.is_dir():
                merge_tree(tmp, target)
            else:
                os.replace(tmp, target)
            return target
        except asyncssh.SFTPError as exc:
            raise _sftp_error(host, remote, exc) from None
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(
                f"copying {host.name}:{remote} to {local} failed: {exc}", BOOT_HINT
            ) from None
        finally:
            sftp.exit()
            if tmp is not None and tmp.exists():
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)

    # -- port forwards -----------------------------------------------------------

    async def forward(
        self, host: HostInfo, local_port: int, remote_port: int, remote_host: str = "localhost"
    ) -> Forward:
        """Listen on 127.0.0.1:`local_port` (0 picks one) and forward to the box."""

        async def open_(conn: asyncssh.SSHClientConnection) -> Forward:
            forward = Forward(conn, host, remote_port, remote_host)
            await forward.listen(local_port)
            return forward

        try:
            return await self.channel(host, open_)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                holder = port_holder(local_port)
                raise CloudshError(
                    f"local port {local_port} is already in use" + (f" by {holder}" if holder else ""),
                    f"pick another one, e.g. {local_port + 1}:{remote_port}, or stop what uses it",
                ) from None
            raise reach_error(host, exc) from None
        except asyncssh.Error as exc:
            raise reach_error(host, exc) from None

    # -- readiness ---------------------------------------------------------------

    async def wait_ready(
        self,
        resolve: Callable[[], Awaitable[HostInfo | None]],
        *,
        timeout: float,
        interval: float = 0.1,
    ) -> HostInfo:
        """Poll until the box's SSH server sends its banner; returns where it answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "the box has no address yet"
        while True:
            host = await resolve()
            if host is not None:
                remaining = max(0.1, deadline - loop.time())
                seen = await _probe(host, min(remaining, self.settings.ssh_connect_timeout_s))
                if seen is None:
                    return host
                last = f"{_where(host)}: {seen}"
            if loop.time() + interval > deadline:
                raise SSHError(
                    f"box did not answer SSH within {timeout:g} s (last: {last})", BOOT_HINT
                )
            await asyncio.sleep(interval)

def _sftp_error(host: HostInfo, path: str, exc: asyncssh.SFTPError) -> CloudshError:
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        return CloudshError(
            f"no such file or directory on {host.name}: {path}", "check the path with `cloudsh run`"
        )
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return CloudshError(
            f"permission denied on {host.name}: {path}", "pick a path the login user can write"
        )
    return CloudshError(f"file copy on {host.name} failed for {path}: {exc.reason}", "")


async def _probe(host: HostInfo, timeout: float) -> str | None:
    """None if an SSH server answers at host:port, else what was seen instead."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.host, host.port)
            # RFC 4253 lets a server send other lines before its version line.
            for _ in range(20):
                line = await reader.readline()
                if not line:
                    return "the connection closed before an SSH banner"
                if line.startswith(b"SSH-"):
                    return None
            return "no SSH banner"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
