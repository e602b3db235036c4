"""The real `cloudsh` binary in a real terminal (tmux): `:` commands, the listing, the
hand-off to OpenSSH and back, and quitting. The screen is read with capture-pane."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(not shutil.which("tmux") or not shutil.which("ssh"), reason="needs tmux and OpenSSH"),
]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for(session: str, *texts: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        shown = screen(session)
        if all(t in shown for t in texts):
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{texts!r} never appeared; screen:\n{shown}")


def send(session: str, *keys: str) -> None:
    tmux("send-keys", "-t", session, *keys)


def command(session: str, line: str) -> None:
    send(session, ":")
    wait_for(session, "tab Complete")  # the command line has the focus
    send(session, "-l", line)
    wait_for(session, f" {line}")
    send(session, "Enter")


@pytest.fixture
def session(sandbox: object) -> Iterator[str]:
    name = f"cloudsh-tui-{os.getpid()}"
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, stdin=subprocess.DEVNULL)


def test_cloudsh_tui_in_tmux(session: str, tmp_path: Path) -> None:
    box = f"tmux-{uuid.uuid4().hex[:4]}"
    cloudsh = Path(sys.executable).with_name("cloudsh")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k.startswith(("XDG_", "CLOUDSH_", "HOME", "PATH")))
    cmd = f"env -u COLUMNS -u LINES {env} TERM=xterm-256color CLOUDSH_SANDBOX=1 {shlex.quote(str(cloudsh))}; echo TUI-EXIT=$?; sleep 30"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "36", cmd)
    # Detached sessions may ignore -x/-y (tmux's default-size): size the window itself.
    tmux("set-option", "-t", session, "window-size", "manual")
    tmux("resize-window", "-t", session, "-x", "120", "-y", "36")
    wait_for(session, "Instances", "Prices", "Volumes", "SANDBOX")

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
