"""The sandbox's HTTP server keeps a connection open between requests, as EC2's endpoints
do, frames each answer with its length, and survives a request its app fails on."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cloudsh.sandbox.httpd import WsgiServer


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("the app failed")
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    seen = f"{environ['REQUEST_METHOD']} {path} ?{environ['QUERY_STRING']} {environ.get('HTTP_X_THING', '-')} "
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [seen.encode(), body, b" port=", str(environ["REMOTE_PORT"]).encode()]  # no length: the server adds it


@pytest.fixture
def server() -> Iterator[WsgiServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    srv = WsgiServer(sock, _app)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _conn(srv: WsgiServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*srv.server_address[:2], timeout=5)


def test_one_connection_serves_many_requests(server: WsgiServer) -> None:
    conn = _conn(server)
    answers = []
    for n in range(3):
        conn.request("POST", f"/a%20b?x={n}", body=b"Action=DescribeThings", headers={"X-Thing": "t"})
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Connection") is None and r.getheader("Date")
        answers.append(r.read().decode())
    assert answers[0].startswith("POST /a b ?x=0 t Action=DescribeThings port=")
    ports = {a.rsplit("port=", 1)[1] for a in answers}
    assert len(ports) == 1, "each request came on a connection of its own"
    conn.close()


def test_a_failing_app_answers_500_and_the_server_serves_on(server: WsgiServer) -> None:
    conn = _conn(server)
    conn.request("GET", "/boom")
    r = conn.getresponse()
    assert r.status == 500
    r.read()
    conn.close()
    again = _conn(server)
    again.request("GET", "/fine")
    assert again.getresponse().status == 200


def test_a_chunked_body_is_refused_and_close_is_honoured(server: WsgiServer) -> None:
    conn = _conn(server)
    conn.request("POST", "/x", body=iter([b"abc"]), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    assert r.status == 411
    r.read()
    conn.close()
    conn = _conn(server)
    conn.request("GET", "/x", headers={"Connection": "close"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Connection") == "close"
    r.read()


def test_closing_the_server_ends_open_connections(server: WsgiServer) -> None:
    conn = _conn(server)
    conn.request("GET", "/x")
    conn.getresponse().read()
    server.shutdown()
    server.server_close()
    assert conn.sock is not None
    conn.sock.settimeout(5)
    assert conn.sock.recv(1) == b"", "the kept connection was left open"
