"""Waiting for a cloud resource (image, volume, snapshot) to reach a state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from cloudsh.errors import CloudshError
from cloudsh.ops.events import Progress


async def wait_for_state(
    what: str,
    probe: Callable[[], Awaitable[str]],
    done: set[str],
    *,
    failed: frozenset[str] = frozenset({"failed", "error", "invalid"}),
    timeout: float,
    progress: Progress,
) -> str:
    """Poll until `probe()` returns a state in `done`; say each new state once."""
    deadline = time.monotonic() + timeout
    last, interval = "", 0.2
    while True:
        state = await probe()
        if state != last:
            progress(f"{what}: {state}")
            last = state
        if state in done:
            return state
        if state in failed:
            raise CloudshError(f"{what} ended {state}", "see the AWS console for the reason")
        if time.monotonic() > deadline:
            raise CloudshError(f"{what} is still {state} after {timeout:.0f} s", "check again later; it may still finish")
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 15.0)
