"""Background tunnels end to end: the real `cloudsh` program hands forwards to the
per-user keeper process, which outlives it, follows the box across a stop and start,
and is listed by `tunnels` and by the app's tunnels view after the app is reopened."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from textual.widgets import DataTable

from cloudsh.config import Settings
from cloudsh.ops.background import list_background, socket_path
from cloudsh.root import connect
from cloudsh.tui.app import CloudshApp
from cloudsh.tui.handoff import RecordingHandoff
from cloudsh.tui.screens import TunnelsScreen
from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox, serve_http

pytestmark = pytest.mark.sandbox

#: The keeper inherits these from the command that starts it: quick retries and probes.
FAST = {"CLOUDSH_TUNNEL_RETRY_S": "0.3", "CLOUDSH_TUNNEL_PROBE_S": "1"}
REMOTE = 8891


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return bytes(r.read())


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def kept() -> list[dict[str, Any]]:
    """`cloudsh tunnels --json`."""
    return json.loads(ok("tunnels", "--json"))  # type: ignore[no-any-return]


def states() -> list[str]:
    """What the keeper says now, asked directly (quicker than the program, for polling)."""
    return [t.state for t in asyncio.run(list_background(Settings.load()))]


def until(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.1)
    return result


async def in_the_app(box: str) -> list[str]:
    """The first three cells of the app's tunnels view's row for `box` (press `T`)."""
    app = CloudshApp(lambda: connect(Settings.load(), sandbox=True), handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("T")
        deadline = time.monotonic() + 20
        while not (isinstance(app.screen, TunnelsScreen) and app.screen.manager.background):
            assert time.monotonic() < deadline, "the tunnels view never listed the background tunnel"
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        table = app.screen.query_one(DataTable)
        row = [str(c) for c in table.get_row(f"bg:{box}:{app.screen.manager.background[0].local}")]
        await pilot.press("escape")
    return row[:3]


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[str]:
    ok("launch", "bgbox", "--type", "t3.micro")
    ok("run", "bgbox", "--", serve_http(REMOTE, "bg-hello"))
    yield "bgbox"
    cloudsh("tunnel", "close", "bgbox")
    cloudsh("terminate", "bgbox", "--yes")


def test_background_tunnel_outlives_its_shell_and_the_box_restarting(box: str) -> None:
    local = free_port()
    out = ok("tunnel", box, f"{local}:{REMOTE}", "--background", env=FAST)  # that process has exited
    assert f"http://localhost:{local}/ -> {box}:{REMOTE}" in out
    try:
        assert fetch(local) == b"bg-hello"
        [t] = kept()
        assert (t["box"], t["local_port"], t["remote_port"], t["state"]) == (box, local, REMOTE, "open")
        assert t["bytes"] > len("bg-hello")

        # A second tunnel on the same local port is refused, naming who holds it.
        r = cloudsh("tunnel", box, f"{local}:22", "--background")
        assert r.returncode == 1 and f"held by the background tunnel to {box}:{REMOTE}" in one_line_error(r)

        ok("stop", box)
        until(lambda: states() == ["box stopped"])
        ok("start", box)
        until(lambda: states() == ["open"])
        # The stop ended the server on the box: the keeper's probe notices, until it is back.
        until(lambda: "nothing answers on the box's port" in kept()[0]["note"])
        ok("run", box, "--", serve_http(REMOTE, "bg-again"))
        assert fetch(local) == b"bg-again"
        [t] = kept()
        assert t["local_port"] == local
        # The app, opened afresh (nothing of this tunnel in it), lists it from the keeper.
        assert asyncio.run(in_the_app(box)) == [f"http://localhost:{local}/", box, str(REMOTE)]
    finally:
        closed = cloudsh("tunnel", "close", box)
    assert closed.returncode == 0 and f"closed http://localhost:{local}/" in closed.stderr
    assert not listening(local)
    assert kept() == []
    until(lambda: not socket_path(Settings.load()).exists())  # the keeper exits with nothing to keep


def test_bad_background_tunnels_say_why_and_leave_nothing_listening(box: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cloudsh("tunnel", box, f"{port}:{REMOTE}", "--background")
        assert r.returncode == 1 and f"local port {port} is already in use by pid {os.getpid()}" in one_line_error(r)
    local = free_port()
    r = cloudsh("tunnel", "no-such-box", f"{local}:{REMOTE}", "--background")
    assert r.returncode != 0 and "no-such-box" in one_line_error(r)
    assert not listening(local)
    r = cloudsh("tunnel", "close", box)
    assert r.returncode == 1 and "no background tunnel to bgbox" in one_line_error(r)
    assert kept() == []
    # The keeper's directory must be private: one others may enter is refused.
    directory = socket_path(Settings.load()).parent
    directory.chmod(0o755)
    try:
        r = cloudsh("tunnels")
        assert r.returncode == 1 and "is not private to you" in one_line_error(r)
    finally:
        directory.chmod(0o700)
