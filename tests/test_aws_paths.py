"""The public-address lookup only real AWS uses (checkip.amazonaws.com), run against a
local stand-in for its endpoint. (The AWS host resolver is tested in test_ssh.py.)"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudsh.errors import CloudshError
from cloudsh.services.address import CheckIpAddress


class _CheckIp(http.server.BaseHTTPRequestHandler):
    answers: list[bytes] = []
    asked = 0

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        type(self).asked += 1
        body = self.answers.pop(0)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def checkip() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CheckIp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _CheckIp.asked = 0
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_public_address_is_asked_once_then_remembered(checkip: str, tmp_path: Path) -> None:
    _CheckIp.answers = [b"203.0.113.7\n", b"198.51.100.2\n"]
    source = CheckIpAddress(tmp_path, url=checkip)
    assert asyncio.run(source.current()) == "203.0.113.7"
    assert asyncio.run(source.current()) == "203.0.113.7" and _CheckIp.asked == 1  # a burst asks once
    assert asyncio.run(source.current(fresh=True)) == "198.51.100.2" and _CheckIp.asked == 2


def test_public_address_failures_are_one_clear_line(checkip: str, tmp_path: Path) -> None:
    _CheckIp.answers = [b"<html>captive portal</html>"]
    with pytest.raises(CloudshError, match="unexpected public address"):
        asyncio.run(CheckIpAddress(tmp_path, url=checkip).current())
    with pytest.raises(CloudshError, match="cannot find this machine's public address") as err:
        asyncio.run(CheckIpAddress(tmp_path / "other", url="http://127.0.0.1:9/").current())
    assert "network" in str(err.value) and "\n" not in str(err.value)
