"""A box's host key is checked against the keys cloud-init prints to its console, without
waiting for it: a key the console has not shown yet is pinned unconfirmed (said once) and
checked at the next connection; a console that never shows one ends in trust on first use,
said once; a console key other than the pinned one is refused. The console is played by
the session's sandbox, or blanked or forged by the fault proxy in front of it."""

from __future__ import annotations

import base64
import dataclasses
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from cloudsh.config import Settings
from cloudsh.errors import HostKeyChanged
from cloudsh.ops.reach import ssh_host, wait_ssh
from cloudsh.services.backend import Backend
from cloudsh.services.known_hosts import TOFU, UNCONFIRMED
from tests.cli import cloudsh
from tests.faults import DroppingProxy, ec2_error
from tests.sandbox_fixture import LaunchedBox, Sandbox
from tests.test_faults import backend_via

pytestmark = pytest.mark.sandbox

UNCONFIRMED_LINE = "its console shows no host key yet: host key SHA256:"
TOFU_LINE = "on first use"


def _console_reply(iid: str, text: str) -> bytes:
    """GetConsoleOutput as EC2 answers it; no `output` element while nothing is printed."""
    output = f"<output>{base64.b64encode(text.encode()).decode()}</output>" if text else ""
    body = (
        '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>{uuid.uuid4()}</requestId><instanceId>{iid}</instanceId>{output}"
        "</GetConsoleOutputResponse>"
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def _console(reply: Callable[[], bytes]) -> Callable[[bytes], bytes | None]:
    return lambda request: reply() if b"Action=GetConsoleOutput" in request else None


class Steps:
    """Backends on the session's sandbox, each through a proxy that plays the console."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        # A known_hosts of its own, and the key the sandbox's boxes accept.
        self.settings = dataclasses.replace(Settings.load(), state_dir=sb.key_path.parent / f"hk-{uuid.uuid4().hex[:6]}")
        self.settings.state_dir.mkdir()
        self.settings.key_path.symlink_to(sb.key_path)
        public = asyncssh.read_private_key(str(sb.key_path)).export_public_key("openssh").decode()
        self.settings.key_path.with_name(self.settings.key_path.name + ".pub").write_text(public)
        self.proxies: list[DroppingProxy] = []

    def backend(self, console: Callable[[], bytes] | None = None, **settings: float) -> Backend:
        url = self.sb.env["AWS_ENDPOINT_URL"]
        if console is not None:
            proxy = DroppingProxy(url, fail=_console(console))
            self.proxies.append(proxy)
            url = proxy.url
        return backend_via(url, dataclasses.replace(self.settings, **settings))

    async def connect(self, b: Backend, iid: str, *, first: bool = False) -> list[str]:
        """What connecting said: a first connection as `launch` makes it, else as `run` does."""
        [inst] = await b.ec2.list_instances(ids=[iid])
        said: list[str] = []
        try:
            await (wait_ssh if first else ssh_host)(b, inst, progress=said.append)
        finally:
            await b.ssh.close()
        return said

    def pin(self, iid: str) -> str:
        """The known_hosts line of the box."""
        path = Path(self.settings.known_hosts_path)
        return next(line for line in path.read_text().splitlines() if line.startswith(iid))


@pytest.fixture
def steps(sandbox: Sandbox) -> Iterator[Steps]:
    s = Steps(sandbox)
    yield s
    for p in s.proxies:
        p.close()


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[LaunchedBox]:
    """One box for every test: each test pins into a known_hosts of its own (`Steps`)."""
    made = sandbox.launch("t3.micro")
    yield made
    sandbox.ec2().terminate_instances(InstanceIds=[made.id])


def _blank(box: LaunchedBox) -> Callable[[], bytes]:
    return lambda: _console_reply(box.id, "")


async def test_a_slow_console_pins_unconfirmed_and_the_next_connection_confirms(steps: Steps, box: LaunchedBox) -> None:
    said = await steps.connect(steps.backend(_blank(box)), box.id, first=True)
    assert len(said) == 1 and UNCONFIRMED_LINE in said[0] and box.id in said[0]
    assert UNCONFIRMED in steps.pin(box.id)  # never recorded as verified
    assert steps.pin(box.id).split()[1:3] == box.host_key.split()[:2]
    # The next connection reads the console (the sandbox's shows the keys by now): confirmed.
    assert await steps.connect(steps.backend(), box.id) == []
    assert steps.pin(box.id).split()[1:] == box.host_key.split()[:2]


async def test_a_console_that_never_shows_a_key_ends_in_trust_on_first_use_said_once(steps: Steps, box: LaunchedBox) -> None:
    said = await steps.connect(steps.backend(_blank(box), console_wait_s=0.0), box.id, first=True)
    assert len(said) == 1 and TOFU_LINE in said[0] and "no host key" in said[0]
    assert steps.pin(box.id).endswith(TOFU)
    assert await steps.connect(steps.backend(_blank(box), console_wait_s=0.0), box.id) == []  # said once


async def test_an_unreadable_console_is_trust_on_first_use_at_once(steps: Steps, box: LaunchedBox) -> None:
    denied = steps.backend(lambda: ec2_error("UnauthorizedOperation", "You are not authorized to perform this operation."))
    said = await steps.connect(denied, box.id, first=True)
    if said and UNCONFIRMED_LINE in said[0]:
        # The refusal came in after SSH answered (nothing waits for the console): the key
        # was pinned unconfirmed, and the next connection settles it.
        said = await steps.connect(denied, box.id)
    assert len(said) == 1 and "cannot read its console" in said[0] and TOFU_LINE in said[0]
    assert steps.pin(box.id).endswith(TOFU)


async def test_a_console_key_other_than_the_pinned_or_offered_one_is_refused(steps: Steps, box: LaunchedBox) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().strip()
    forged = f"-----BEGIN SSH HOST KEY KEYS-----\r\n{other} root@ip\r\n-----END SSH HOST KEY KEYS-----\r\n"
    # First contact: the forged console is read while connecting; either the key
    # exchange or the check right after refuses the box's real key.
    with pytest.raises(HostKeyChanged) as err:
        await steps.connect(steps.backend(lambda: _console_reply(box.id, forged)), box.id, first=True)
    assert "known-hosts forget" in err.value.hint
    # Pinned unconfirmed on a slow console, then the console shows another key.
    Path(steps.settings.known_hosts_path).write_text("")
    await steps.connect(steps.backend(_blank(box)), box.id, first=True)
    with pytest.raises(HostKeyChanged) as err:
        await steps.connect(steps.backend(lambda: _console_reply(box.id, forged)), box.id)
    assert "is not the one its console shows" in err.value.message
    assert f"cloudsh known-hosts forget {box.id}" in err.value.hint
    assert UNCONFIRMED in steps.pin(box.id)  # still not verified


def test_launch_then_run_through_the_real_program_leaves_a_confirmed_key(sandbox: Sandbox) -> None:
    """`launch` does not wait for the console; at the latest the next `run` confirms the key."""
    launched = cloudsh("launch", "hk-run", "--type", "t3.micro")
    iid = re.search(r"launched (i-[0-9a-f]+)", launched.stderr)
    try:
        assert launched.returncode == 0 and iid, launched.stderr
        ran = cloudsh("run", "hk-run", "--", "true")
        assert ran.returncode == 0, ran.stderr
        said = launched.stderr + ran.stderr
        assert said.count(UNCONFIRMED_LINE) <= 1 and TOFU_LINE not in said
        known = Settings.load().known_hosts_path.read_text().splitlines()
        [pin] = [line for line in known if line.startswith(iid.group(1))]
        assert len(pin.split()) == 3  # no unconfirmed or trust-on-first-use note
    finally:
        if iid:
            sandbox.ec2().terminate_instances(InstanceIds=[iid.group(1)])
