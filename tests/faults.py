"""Fault injection at the edge: an HTTP proxy between a client and the sandbox's EC2 endpoint.

It forwards each request unchanged; a rule can swallow the response of a matching
request (the server did the work, the client never hears back), which is exactly the
failure an idempotency token must survive.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlparse


def _read_http(sock: socket.socket) -> bytes | None:
    """One HTTP/1.1 message (headers + Content-Length body), or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class DroppingProxy:
    """`http://127.0.0.1:PORT` that forwards to `upstream`, dropping chosen responses."""

    def __init__(
        self,
        upstream: str,
        drop: Callable[[bytes], bool] = lambda _: False,
        fail: Callable[[bytes], bytes | None] = lambda _: None,
    ) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.drop = drop
        self.fail = fail
        self.requests: list[bytes] = []
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            while True:
                request = _read_http(client)
                if request is None:
                    return
                self.requests.append(request)
                canned = self.fail(request)
                if canned is not None:
                    client.sendall(canned)  # answer instead of the server; it never sees it
                    continue
                with socket.create_connection(self.upstream) as up:
                    up.sendall(request)
                    response = _read_http(up)
                if response is None:
                    return
                if self.drop(request):
                    self.dropped += 1
                    return  # close without answering: the client sees a dropped connection
                client.sendall(response)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the serving thread
        self._server.close()


def ec2_error(code: str, message: str, status: int = 400) -> bytes:
    """An EC2 query-protocol error response, as AWS sends it."""
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors><RequestID>fault-1</RequestID></Response>"
    ).encode()
    return (
        f"HTTP/1.1 {status} {'Internal Server Error' if status >= 500 else 'Bad Request'}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
