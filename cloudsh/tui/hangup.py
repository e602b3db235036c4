"""Notice a terminal that went away without a hangup signal.

When the SSH connection to a machine running the app dies without SIGHUP reaching it,
its terminal reads end-of-file forever: Textual's input thread then spins on it and the
app would burn a core for as long as nobody kills it. `poll()` on the terminal says
POLLHUP once its other side is gone, so the app checks that every second and leaves.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from typing import Any

from textual.app import App

GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
#: The exit status of a program ended by a hangup (128 + SIGHUP), as shells report it.
TERMINAL_GONE = 129
#: Seconds the app may take to leave on its own once its terminal is gone.
LEAVE_S = 3.0


def terminal_gone(fd: int | None = None) -> bool:
    """True when the terminal (or pipe) behind `fd` (default: stdin) has hung up."""
    if fd is None:
        if sys.__stdin__ is None:
            return False
        fd = sys.__stdin__.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        events = poller.poll(0)
    except OSError:
        return True
    return any(mask & GONE for _, mask in events)


def leave_when_terminal_gone(app: App[Any]) -> None:
    """Look every second; once the app's terminal has hung up, exit with `TERMINAL_GONE`."""
    if app.is_headless:
        return

    leaving = threading.Event()

    def check() -> None:
        if not leaving.is_set() and terminal_gone():
            leaving.set()
            app.exit(return_code=TERMINAL_GONE)
            # Leaving may wait on what cannot finish without a terminal (its last frames,
            # workers): if the app is still here after a moment, the process ends itself.
            timer = threading.Timer(LEAVE_S, os._exit, args=(TERMINAL_GONE,))
            timer.daemon = True
            timer.start()

    app.set_interval(1.0, check)
