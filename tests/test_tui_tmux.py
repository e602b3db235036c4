"""The real `cloudsh` binary in a real terminal (tmux): `:` commands, the listing, the
hand-off to OpenSSH and back, and quitting. The screen is read with capture-pane."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tmux import command, kill, send, start_app, wait_for

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not shutil.which("tmux") or not shutil.which("ssh"), reason="needs tmux and OpenSSH"),
]


@pytest.fixture
def session(sandbox: object) -> Iterator[str]:
    name = f"cloudsh-tui-{os.getpid()}"
    yield name
    kill(name)


def test_cloudsh_tui_in_tmux(session: str, tmp_path: Path) -> None:
    box = f"tmux-{uuid.uuid4().hex[:4]}"
    start_app(session)

    command(session, f"launch {box} --type t3.micro")
    wait_for(session, f"✓ launch {box} --type t3.micro done")
    shown = wait_for(session, box, "running")
    assert "burning $" in shown

    # Narrow the list to the new box, then hand the terminal to OpenSSH and come back.
    send(session, "/")
    wait_for(session, "filter: name")
    send(session, "-l", box)
    wait_for(session, f"Instances /{box} (1 of")
    send(session, "Enter")
    time.sleep(0.3)
    send(session, "c")
    wait_for(session, "ubuntu@", timeout=20)  # the box's shell prompt: the app is suspended
    send(session, "-l", "echo on-the-box-$((6*7))")
    send(session, "Enter")
    wait_for(session, "on-the-box-42")
    send(session, "-l", "exit")
    send(session, "Enter")
    wait_for(session, "Instances", f"connect {box} done")

    command(session, f"stop {box}")
    wait_for(session, f"stop {box} done")
    wait_for(session, "stopped")

    command(session, "no-such-command")
    assert "unknown command `no-such-command`" in wait_for(session, "unknown command")

    send(session, "q")
    wait_for(session, "TUI-EXIT=0")
