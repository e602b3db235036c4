"""A box busy with one change at a time, across front ends and machines.

Two front ends resizing one box would each stop it, change its type and start it, the
last one silently winning. EC2 has no lock, so the box carries a tag naming the change
under way (`TAG_BUSY`): a run that finds it refuses, and two runs that set it at once
both read it back after a moment, when the later write has won (tags are last-writer-wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cloudsh.errors import CloudshError, InvalidState
from cloudsh.models import Instance
from cloudsh.services.backend import Backend

TAG_BUSY = "cloudsh:busy"
#: A claim older than this was left by a run that died (a resize takes minutes, not this).
STALE_S = 30 * 60
#: How long a new claim waits before reading itself back.
SETTLE_S = 0.5


def _holder(inst: Instance, now: float) -> tuple[str, str] | None:
    """(run, what) of a live claim on the box."""
    run, _, rest = inst.tags.get(TAG_BUSY, "").partition(" ")
    since, _, what = rest.partition(" ")
    try:
        fresh = now - float(since) < STALE_S
    except ValueError:
        return None
    return (run, what) if run and fresh else None


def _refuse(inst: Instance, what: str) -> InvalidState:
    return InvalidState(
        f"{inst.label} is busy: another front end is running `{what}` on it",
        "wait until that finishes (`cloudsh show` says when it is done), then try again",
    )


@asynccontextmanager
async def busy(backend: Backend, inst: Instance, what: str) -> AsyncIterator[Instance]:
    """Hold the box for `what` (e.g. "resize box t3.large"), or raise `InvalidState`;
    gives the box as EC2 describes it once held."""
    ec2 = backend.ec2
    held = _holder(await ec2.get_instance(inst.id), time.time())
    if held:
        raise _refuse(inst, held[1])
    run = uuid.uuid4().hex[:12]
    await ec2.set_tags([inst.id], {TAG_BUSY: f"{run} {time.time():.0f} {what}"})
    await asyncio.sleep(SETTLE_S)
    now = await ec2.get_instance(inst.id)
    held = _holder(now, time.time())
    if held and held[0] != run:
        raise _refuse(inst, held[1])
    try:
        yield now
    finally:
        with contextlib.suppress(CloudshError):  # a stale claim expires by itself
            await ec2.delete_tags([inst.id], [TAG_BUSY])
