"""The sandbox's HTTP server: WSGI over HTTP/1.1 with connections kept open.

EC2's endpoints keep a connection open between calls, and botocore keeps a pool of them.
werkzeug's development server, which moto's own server mode uses, closes every connection
after one answer, so each call paid a new TCP connection and a new server thread, and the
framing (headers written and read line by line, two writes per answer) cost as much of
the daemon's time as answering the call: a sweep of every region (~100 small calls) paid
that a hundred times.

This server reads a request, hands it to the WSGI app, and writes the answer with its
length in one write; the connection stays open for the next request until the client
closes it, asks to close it, or leaves it idle for `IDLE_S`. One thread per connection.
It serves what the sandbox's clients send (botocore, the AWS CLI, curl): requests with a
`Content-Length` or none; a chunked request body is refused with 411.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote_to_bytes

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: An idle connection is closed after this long (an Application Load Balancer's default
#: idle timeout is 60 s: https://docs.aws.amazon.com/elasticloadbalancing/latest/application/application-load-balancers.html#connection-idle-timeout).
IDLE_S = 60.0
#: Largest request body read (EC2's query API takes far less).
MAX_BODY = 64 * 1024 * 1024
_NO_BODY = frozenset({HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WsgiServer
    timeout = IDLE_S

    def handle_one_request(self) -> None:
        try:
            self._one_request()
        except (TimeoutError, ConnectionError):  # idle too long, or the client went away
            self.close_connection = True

    def _one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.send_error(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            self.close_connection = True
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.send_error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        self._answer(self._environ(body))

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)) if body else self.headers.get("Content-Length", ""),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _answer(self, environ: dict[str, Any]) -> None:
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return lambda data: chunks.append(data)  # the old-style write()

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:  # noqa: BLE001 - one request fails, the server serves on
            log.exception("%s %s failed", self.command, self.path)
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
            self.close_connection = True
            return
        status, headers = started
        code = int(status.split(None, 1)[0])
        body = b"".join(chunks)
        names = {name.lower() for name, _ in headers}
        if "date" not in names:
            headers.append(("Date", formatdate(usegmt=True)))
        if "content-length" not in names and code not in _NO_BODY and not 100 <= code < 200:
            headers.append(("Content-Length", str(len(body))))
        if self.close_connection:
            headers.append(("Connection", "close"))
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        payload = f"{self.protocol_version} {status}\r\n{head}\r\n".encode("latin-1")
        if self.command != "HEAD":
            payload += body
        try:
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.client_address[0], *args)


class WsgiServer(socketserver.ThreadingTCPServer):
    """`app` served on an already bound and listening `sock`, a thread per connection."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, app: WsgiApp) -> None:
        super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def server_close(self) -> None:
        """Stop listening and end the connections still open (their threads then end)."""
        with self._open_lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        super().server_close()
