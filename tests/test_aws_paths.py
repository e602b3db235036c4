"""The parts only real AWS uses, run against local stand-ins for their endpoints: the
public-address lookup (checkip.amazonaws.com) and the AWS host resolver."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudsh.config import Settings
from cloudsh.errors import CloudshError, InvalidState
from cloudsh.models import Instance
from cloudsh.services.address import CheckIpAddress
from cloudsh.services.hosts import AwsHostResolver


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


def test_aws_boxes_are_reached_on_22_at_their_public_then_private_address(tmp_path: Path) -> None:
    resolver = AwsHostResolver(Settings(state_dir=tmp_path))
    box = Instance(id="i-0abc", name="train", type="g5.xlarge", state="running",
                   public_ip="203.0.113.9", private_ip="172.31.0.5")
    host = resolver.resolve(box)
    assert host is not None and (host.host, host.port, host.host_key_alias) == ("203.0.113.9", 22, "i-0abc")
    assert host.expected_host_keys == ()
    # Host keys cloud-init printed on the console become what a first connection expects.
    console = "ec2: -----BEGIN SSH HOST KEY KEYS-----\nec2: ssh-ed25519 AAAAC3Nza key\nec2: -----END SSH HOST KEY KEYS-----\n"
    assert resolver.learn_console_output("i-0abc", console) == ("ssh-ed25519 AAAAC3Nza",)
    assert resolver.resolve(box).expected_host_keys == ("ssh-ed25519 AAAAC3Nza",)  # type: ignore[union-attr]
    private = resolver.resolve(Instance(id="i-1", name="vpn", type="t3.micro", state="running", private_ip="10.0.0.4"))
    assert private is not None and private.host == "10.0.0.4"
    assert resolver.resolve(Instance(id="i-2", name="new", type="t3.micro", state="pending")) is None
    with pytest.raises(InvalidState, match="cloudsh start stopped"):
        resolver.resolve(Instance(id="i-3", name="stopped", type="t3.micro", state="stopped"))
