"""How workflows tell a front end what they are doing.

`Progress` receives one line per step for a person to read ("stopping box"). Front ends
show it; none of them parses it.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A `Progress` that shows nothing (scripts and the Python API)."""
