"""A first connection checks the box's host key against the keys cloud-init prints to the
console, polling for them since the console lags the box; without them, trust on first
use, said in one line. On a sandbox of its own whose console stays empty for `CONSOLE_S`
after each box's SSH server comes up (`CLOUDSH_SANDBOX_CONSOLE_S`)."""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from collections.abc import Iterator

import asyncssh
import pytest

from cloudsh.config import Settings
from cloudsh.errors import HostKeyChanged
from cloudsh.ops.reach import wait_ssh
from cloudsh.sandbox.control import sandbox_down
from cloudsh.services.backend import Backend
from tests.cli import cloudsh, ok
from tests.faults import DroppingProxy
from tests.sandbox_fixture import Sandbox, start_sandbox
from tests.test_faults import backend_via

pytestmark = pytest.mark.sandbox

#: The console of this module's sandbox shows the host keys this long after SSH is up.
CONSOLE_S = 3.0
TOFU_LINE = "no host key in the console yet: trusting the first key and pinning it"


@pytest.fixture(scope="module")
def late(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOUDSH_SANDBOX_CONSOLE_S", str(CONSOLE_S))
    try:
        sb = start_sandbox(tmp_path_factory.mktemp("late-console"), mp)
        try:
            yield sb
        finally:
            sandbox_down(sb.settings)
    finally:
        mp.undo()


def _settings(sb: Sandbox, console_wait_s: float = 30.0) -> Settings:
    """This sandbox's settings, logging in with the key its boxes accept."""
    return dataclasses.replace(Settings.load(), state_dir=sb.key_path.parent, console_wait_s=console_wait_s)


def _console(sb: Sandbox, iid: str) -> str:
    return str(sb.ec2().get_console_output(InstanceId=iid).get("Output") or "")


async def _first_contact(b: Backend, iid: str) -> tuple[list[str], float]:
    [inst] = await b.ec2.list_instances(ids=[iid])
    said: list[str] = []
    started = time.monotonic()
    await wait_ssh(b, inst, progress=said.append)
    return said, time.monotonic() - started


async def test_first_contact_waits_for_the_console_and_pins_its_key(late: Sandbox) -> None:
    box = late.launch("t3.micro")
    assert _console(late, box.id) == ""  # SSH answers, cloud-init has not printed the keys yet
    b = backend_via(late.env["AWS_ENDPOINT_URL"], _settings(late, console_wait_s=20.0))
    try:
        said, took = await _first_contact(b, box.id)
        assert said == []  # checked against the console: no trust on first use
        assert took > 1.0  # it waited for the console
        assert b.ssh.known_hosts.keys(box.id) == [" ".join(box.host_key.split()[:2])]
        assert box.host_key.split()[1] in _console(late, box.id)  # botocore decodes it
    finally:
        await b.ssh.close()


async def test_a_console_without_keys_ends_in_trust_on_first_use_said_once(late: Sandbox) -> None:
    box = late.launch("t3.micro")
    b = backend_via(late.env["AWS_ENDPOINT_URL"], _settings(late, console_wait_s=1.0))
    try:
        said, took = await _first_contact(b, box.id)
        assert took < CONSOLE_S  # gave up at its own deadline, before the console printed
        assert len(said) == 1 and said[0].endswith(TOFU_LINE) and box.id in said[0]
        assert b.ssh.known_hosts.keys(box.id) == [" ".join(box.host_key.split()[:2])]
    finally:
        await b.ssh.close()


async def test_a_console_key_other_than_the_servers_is_refused(late: Sandbox) -> None:
    box = late.launch("t3.micro")
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()

    def forged_console(request: bytes) -> bytes | None:
        if b"Action=GetConsoleOutput" not in request:
            return None
        text = f"-----BEGIN SSH HOST KEY KEYS-----\r\n{other} root@ip\r\n-----END SSH HOST KEY KEYS-----\r\n"
        body = (
            '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><instanceId>{box.id}</instanceId>"
            f"<output>{base64.b64encode(text.encode()).decode()}</output></GetConsoleOutputResponse>"
        ).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    proxy = DroppingProxy(late.env["AWS_ENDPOINT_URL"], fail=forged_console)
    b = backend_via(proxy.url, _settings(late))
    try:
        with pytest.raises(HostKeyChanged) as err:
            await _first_contact(b, box.id)
        assert "does not match" in err.value.message
        assert b.ssh.known_hosts.keys(box.id) == []  # nothing pinned
    finally:
        await b.ssh.close()
        proxy.close()


def test_launch_says_once_when_it_trusts_the_first_key(late: Sandbox) -> None:
    """Through the real program: a console slower than `CLOUDSH_CONSOLE_WAIT_S` makes
    `launch` trust and pin the first key, and say so in one line; with time to wait, it
    says nothing of the kind."""
    slow = cloudsh("launch", "hk-tofu", "--type", "t3.micro", env={"CLOUDSH_CONSOLE_WAIT_S": "1"})
    waited = cloudsh("launch", "hk-checked", "--type", "t3.micro")
    try:
        assert slow.returncode == 0, slow.stderr
        assert len([line for line in slow.stderr.splitlines() if TOFU_LINE in line]) == 1
        assert waited.returncode == 0, waited.stderr
        assert TOFU_LINE not in waited.stderr
    finally:
        ok("terminate", "hk-tofu", "hk-checked", "--yes")
