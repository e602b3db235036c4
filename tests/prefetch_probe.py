"""Run as its own process, the way `cloudsh` starts: fork the first listing's child
before anything heavy is imported, then print (as JSON) what came of it.

    python -m tests.prefetch_probe records|fails|cancel|app|app-fallback

Forking is only done while a process has one thread, which a pytest process is not:
hence a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

from cloudsh.cli import GlobalOptions, backend_factory
from cloudsh.tui.prefetch import Prefetch

SANDBOX = GlobalOptions(sandbox=True)
BROKEN = GlobalOptions(sandbox=False, profile="nosuchprofile")  # fails before any network call


def cancel() -> bool:
    """Cancelled while the child lists: is the child gone and reaped?"""
    prefetch = Prefetch.start(SANDBOX)
    assert prefetch is not None

    async def go() -> None:
        task = asyncio.create_task(prefetch.records())
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(go())
    try:
        os.waitpid(prefetch.pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def app(opts: GlobalOptions) -> dict[str, Any]:
    """The app fed by a prefetch: the order in which listing, connection and prices came."""
    prefetch = Prefetch.start(opts)
    from cloudsh.tui.app import CloudshApp
    from cloudsh.tui.handoff import RecordingHandoff
    from cloudsh.tui.messages import BackendReady, InstancesLoaded, PricesLoaded

    order: list[str] = []

    def hook(message: object) -> None:
        if isinstance(message, InstancesLoaded) and not message.stale:
            order.append("listing")
        elif isinstance(message, BackendReady):
            order.append("ready")
        elif isinstance(message, PricesLoaded):
            order.append("prices")

    async def go() -> list[str]:
        a = CloudshApp(backend_factory(SANDBOX), handoff=RecordingHandoff(), prefetch=prefetch)
        async with a.run_test(size=(120, 40), message_hook=hook) as pilot:
            deadline = time.monotonic() + 60
            while "prices" not in order and time.monotonic() < deadline:
                await pilot.pause(0.05)
            return sorted(r["id"] for r in a.records)

    ids = asyncio.run(go())
    return {"order": order, "ids": ids}


def main(mode: str) -> Any:
    if mode in ("records", "fails"):
        prefetch = Prefetch.start(SANDBOX if mode == "records" else BROKEN)
        assert prefetch is not None
        return asyncio.run(prefetch.records())
    if mode == "cancel":
        return cancel()
    return app(SANDBOX if mode == "app" else BROKEN)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
