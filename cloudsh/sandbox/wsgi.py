"""Plumbing shared by the sandbox's WSGI layers in front of moto (`moto_app`, `storage`).

EC2's query protocol sends its parameters form-encoded in the body. Each layer needs
them, and moto must still find the body to read: `params` parses it once per request
and keeps the result in the WSGI environ; `set_body` replaces the body (and forgets
the parse) when a layer rewrites a request.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_PARAMS = "cloudsh.params"


def params(environ: dict[str, Any]) -> dict[str, str]:
    """Query-string and form parameters of the request; the body stays readable for moto."""
    cached: dict[str, str] | None = environ.get(_PARAMS)
    if cached is not None:
        return cached
    pairs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        set_body(environ, body)
        pairs.update(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
    found = {k: v[0] for k, v in pairs.items()}
    environ[_PARAMS] = found
    return found


def set_body(environ: dict[str, Any], body: bytes) -> None:
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop(_PARAMS, None)


def numbered(params: dict[str, str], prefix: str) -> list[str]:
    """`Prefix.1`, `Prefix.2`, ... in order."""
    found = []
    for key, value in params.items():
        head, _, index = key.rpartition(".")
        if head == prefix and index.isdigit():
            found.append((int(index), value))
    return [v for _, v in sorted(found)]


class Ec2Error(Exception):
    """A refusal a layer answers itself, as EC2 would (`error_xml`, status 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_xml(code: str, message: str) -> str:
    """An EC2 error response body, as AWS words it."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Errors><Error><Code>{escape(code)}</Code>"
        f"<Message>{escape(message)}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    )


def call(app: WsgiApp, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run the inner app on `environ` and collect its answer: (status, headers, body)."""
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, list(headers)]
        return lambda data: None

    body = b"".join(app(environ, start_response))
    status, headers = captured
    return status, headers, body


def respond(
    start_response: StartResponse, status: str, body: str, content_type: str = "text/xml;charset=UTF-8"
) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


def one_at_a_time(app: WsgiApp, key: Callable[[], str] = lambda: "") -> WsgiApp:
    """`app` answering one request at a time for each `key()` (the sandbox: per region), its
    body made inside the lock.

    moto's backends are not made for concurrent calls: two calls answered at once can fail
    with "dictionary changed size during iteration" (an HTML 500 no EC2 client can read).
    Each region has a backend of its own, and EC2's regions answer independently, so a sweep
    of every region (`orphans --all-regions`) runs its regions side by side, as on EC2. The
    sandbox's own layers around moto stay concurrent.
    """
    locks: dict[str, threading.Lock] = {}
    guard = threading.Lock()

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with guard:
            lock = locks.setdefault(key(), threading.Lock())
        with lock:
            return list(app(environ, start_response))

    return serve
