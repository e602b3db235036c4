"""Run as its own process, the way `cloudsh` starts: fork the first listing's child
before anything heavy is imported, then print (as JSON) what came of it.

    python -m tests.prefetch_probe records|fails|cancel|app|app-fallback|app-slow

Forking is only done while a process has one thread, which a pytest process is not:
hence a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from typing import Any

from cloudsh.frontend import GlobalOptions, backend_factory
from cloudsh.prefetch import Prefetch

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


def app(opts: GlobalOptions, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The app fed by a prefetch: the order in which listing, connection and prices came."""
    saved = dict(os.environ)
    os.environ.update(env or {})  # the child's environment only
    prefetch = Prefetch.start(opts)
    os.environ.clear()
    os.environ.update(saved)
    from cloudsh.tui.app import CloudshApp
    from cloudsh.tui.handoff import RecordingHandoff
    from cloudsh.tui.messages import BackendReady, InstancesLoaded, PricesLoaded

    order: list[str] = []
    running_at_ready: list[bool] = []

    def hook(message: object) -> None:
        if isinstance(message, InstancesLoaded) and not message.stale:
            order.append("listing")
        elif isinstance(message, BackendReady):
            order.append("ready")
            running_at_ready.append(prefetch is not None and running(prefetch.pid))
        elif isinstance(message, PricesLoaded):
            order.append("prices")

    async def go() -> list[str]:
        a = CloudshApp(backend_factory(SANDBOX), handoff=RecordingHandoff(), prefetch=prefetch)
        async with a.run_test(size=(120, 40), message_hook=hook) as pilot:
            deadline = time.monotonic() + 60
            while "prices" not in order and time.monotonic() < deadline:
                await pilot.pause(0.05)
            return sorted(r.id for r in a.state.rows)

    ids = asyncio.run(go())
    assert prefetch is not None
    try:
        os.waitpid(prefetch.pid, os.WNOHANG)
        reaped = False
    except ChildProcessError:
        reaped = True
    return {"order": order, "ids": ids, "reaped": reaped, "child_running_at_ready": running_at_ready == [True]}


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def slow() -> dict[str, Any]:
    """A child stuck on a cloud that never answers (a loopback port that accepts and
    stays silent): the app connects by itself after a while, and kills it on exit."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{hole.getsockname()[1]}", "AWS_ACCESS_KEY_ID": "stuck",
           "AWS_SECRET_ACCESS_KEY": "stuck", "AWS_DEFAULT_REGION": "us-east-1"}
    return app(GlobalOptions(sandbox=False), env)


def main(mode: str) -> Any:
    if mode in ("records", "fails"):
        prefetch = Prefetch.start(SANDBOX if mode == "records" else BROKEN)
        assert prefetch is not None
        return asyncio.run(prefetch.records())
    if mode == "cancel":
        return cancel()
    if mode == "app-slow":
        return slow()
    return app(SANDBOX if mode == "app" else BROKEN)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
