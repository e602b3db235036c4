"""The app leaves when its terminal goes away without a hangup signal (an SSH connection
to the machine running it that dies): before, Textual's input thread read end-of-file in
a loop and the process burned a core until someone killed it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.sandbox


def _read_until(fd: int, text: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


def test_app_exits_when_its_terminal_goes_away_without_sighup(sandbox: object) -> None:
    master, slave = pty.openpty()
    env = {**os.environ, "CLOUDSH_SANDBOX": "1", "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    # A new session without this pty as its controlling terminal, SIGHUP ignored: closing
    # the terminal sends no signal the app could act on, only end-of-file.
    app = subprocess.Popen(
        [sys.executable, "-m", "cloudsh"], stdin=slave, stdout=slave, stderr=slave, env=env,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    os.close(slave)
    try:
        screen = _read_until(master, b"Instances", 60)
        assert b"Instances" in screen, screen[-2000:]
        os.close(master)
        master = -1
        status = app.wait(timeout=90)  # a bound on a hang, not a speed target
        assert status == 129
    finally:
        if master >= 0:
            os.close(master)
        if app.poll() is None:
            app.kill()
            app.wait()
