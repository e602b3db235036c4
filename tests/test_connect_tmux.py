"""`cloudsh connect` in a real terminal (tmux): OpenSSH gets the terminal, and gives it back."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.cli import ok

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not shutil.which("tmux") or not shutil.which("ssh"), reason="needs tmux and OpenSSH"),
]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout


def wait_for(session: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")


@pytest.fixture
def session() -> Iterator[str]:
    name = f"cloudsh-connect-{os.getpid()}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, stdin=subprocess.DEVNULL)


def test_connect_hands_the_terminal_to_openssh(session: str) -> None:
    ok("launch", "termbox", "--type", "t3.micro")
    try:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items() if k.startswith(("XDG_", "CLOUDSH_", "HOME")))
        cmd = f"env {env} CLOUDSH_SANDBOX=1 {shlex.quote(sys.executable)} -m cloudsh connect termbox; echo CONNECT-EXIT=$?; sleep 60"
        tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", cmd)
        tmux("send-keys", "-t", session, "echo TERM=$TERM tty=$(tty >/dev/null && echo yes) sum=$((6*7))", "Enter")
        screen = wait_for(session, "sum=42")
        assert "tty=yes" in screen  # a real PTY on the box
        tmux("send-keys", "-t", session, "exit 5", "Enter")
        wait_for(session, "CONNECT-EXIT=5")  # the remote shell's status comes back
    finally:
        ok("terminate", "termbox", "--yes")
