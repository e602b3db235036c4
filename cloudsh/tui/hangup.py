"""Notice a terminal that went away without a hangup signal.

When the SSH connection to a machine running the app dies without SIGHUP reaching it,
its terminal reads end-of-file forever: Textual's input thread then spins on it and the
app would burn a core for as long as nobody kills it. `poll()` on the terminal says
POLLHUP once its other side is gone, so the app checks that every second and leaves.
"""

from __future__ import annotations

import select
import sys

GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL
#: The exit status of a program ended by a hangup (128 + SIGHUP), as shells report it.
TERMINAL_GONE = 129


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
