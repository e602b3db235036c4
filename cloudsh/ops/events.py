"""How workflows tell a front end what they are doing.

`Progress` receives one line per step for a person to read ("stopping box"). Front ends
show it; none of them parses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A `Progress` that shows nothing (scripts and the Python API)."""


@contextlib.asynccontextmanager
async def ticking(progress: Progress, what: str, every: float = 5.0) -> AsyncIterator[None]:
    """While the block waits, say `what (N s)` every `every` seconds, so a long wait
    (EC2 takes tens of seconds to start a box) never looks stuck."""

    async def tick() -> None:
        start = time.monotonic()
        while True:
            await asyncio.sleep(every)
            progress(f"{what} ({time.monotonic() - start:.0f} s)")

    task = asyncio.ensure_future(tick())
    try:
        yield
    finally:
        task.cancel()
