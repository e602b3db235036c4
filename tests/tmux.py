"""The real `cloudsh` binary in a real terminal (tmux): start it, type, read the screen
(capture-pane)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


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


def wait_gone(session: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = screen(session)
        if text not in shown:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never went away; screen:\n{shown}")


def send(session: str, *keys: str) -> None:
    tmux("send-keys", "-t", session, *keys)


def command(session: str, line: str) -> None:
    """Type `line` on the app's command line and run it."""
    send(session, ":")
    wait_for(session, "tab Complete")  # the command line has the focus
    send(session, "-l", line)
    wait_for(session, f" {line}")
    send(session, "Enter")


def start_app(session: str, cols: int = 120, rows: int = 36) -> None:
    """The app in a new tmux session on the test's sandbox; `TUI-EXIT=<status>` shows
    when it ends."""
    cloudsh = Path(sys.executable).with_name("cloudsh")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in os.environ.items()
                   if k.startswith(("XDG_", "CLOUDSH_", "HOME", "PATH")))
    cmd = f"env -u COLUMNS -u LINES {env} TERM=xterm-256color CLOUDSH_SANDBOX=1 {shlex.quote(str(cloudsh))}; echo TUI-EXIT=$?; sleep 30"
    tmux("new-session", "-d", "-s", session, "-x", str(cols), "-y", str(rows), cmd)
    # Detached sessions may ignore -x/-y (tmux's default-size): size the window itself.
    tmux("set-option", "-t", session, "window-size", "manual")
    tmux("resize-window", "-t", session, "-x", str(cols), "-y", str(rows))
    wait_for(session, "Instances", "Prices", "Volumes", "SANDBOX")


def kill(session: str) -> None:
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, stdin=subprocess.DEVNULL)
