"""A local port forward over a pooled asyncssh connection that counts the bytes it moves
(the background tunnels report them). asyncssh's own local forwarder does the work; this
adds the counting and closes the listener when the connection drops."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh
from asyncssh.forward import SSHLocalPortForwarder

from cloudsh.models import HostInfo, Tunnel

#: Flow-control window and largest data packet offered to the box per forwarded
#: connection: bigger than asyncssh's defaults (2 MiB, 32 KiB), so a bulk transfer costs
#: fewer packets (and fewer Python calls) on both ends. OpenSSH's sshd still sends at
#: most its own 32 KiB per packet (RFC 4254 section 5.1: the sender may send less).
WINDOW = 8 << 20
MAX_PACKET = 128 << 10


class _CountingForwarder(SSHLocalPortForwarder):
    """asyncssh's local end of a forwarded connection, adding up the bytes it moves."""

    def __init__(self, conn: asyncssh.SSHClientConnection, coro: Any, forward: Forward) -> None:
        super().__init__(conn, coro)
        self._counts = forward

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        self._counts.sent += len(data)
        super().data_received(data, datatype)

    def write(self, data: bytes) -> None:
        self._counts.received += len(data)
        super().write(data)


class Forward:
    """A local port forward: 127.0.0.1:`local_port` -> `remote_host`:`remote_port` on the box,
    with the bytes it has moved each way (`sent` to the box, `received` from it)."""

    def __init__(
        self, conn: asyncssh.SSHClientConnection, host: HostInfo, remote_port: int, remote_host: str
    ) -> None:
        self._conn = conn
        self._server: asyncio.AbstractServer | None = None
        self.host = host
        self.local_port = 0
        self.remote_port = remote_port
        self.remote_host = remote_host
        self.sent = self.received = 0
        self._closed = asyncio.Event()

    async def listen(self, local_port: int) -> None:
        conn = self._conn

        async def tunnel(session_factory: Any, orig_host: str, orig_port: int) -> Any:
            return await conn.create_connection(
                session_factory, self.remote_host, self.remote_port, orig_host, orig_port,
                window=WINDOW, max_pktsize=MAX_PACKET,
            )

        self._server = await asyncio.get_running_loop().create_server(
            lambda: _CountingForwarder(conn, tunnel, self), "127.0.0.1", local_port
        )
        self.local_port = self._server.sockets[0].getsockname()[1]

    @property
    def moved(self) -> int:
        return self.sent + self.received

    @property
    def tunnel(self) -> Tunnel:
        return Tunnel(self.host.name, self.local_port, self.remote_port, self.remote_host)

    def close(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Returns once closed, by `close()` or because the SSH connection dropped."""
        waits = [asyncio.ensure_future(self._closed.wait()), asyncio.ensure_future(self._conn.wait_closed())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            self.close()
