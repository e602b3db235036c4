"""A box that powers itself off (`sudo shutdown -h now`): what EC2 does with it.

EC2 stops an EBS-backed instance shut down from inside, or terminates it when its
instance-initiated shutdown behaviour says `terminate` ("Change the instance initiated
shutdown behavior", EC2 user guide,
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_ChangingInstanceInitiatedShutdownBehavior.html).
The box's `shutdown`/`poweroff` stand-ins
(`tools/poweroff.py`) post to `<its metadata endpoint>/_sandbox/poweroff` (`imds.py`),
and the daemon plays it here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudsh.sandbox import tools as box_tools
from cloudsh.sandbox.tools.poweroff import CONFIG, NAMES

log = logging.getLogger("cloudsh.sandbox.poweroff")


def install_tools(tools: Path, endpoint: str) -> None:
    if endpoint:
        for name in NAMES:
            box_tools.install("poweroff", tools / name, {"endpoint": endpoint}, config=CONFIG)


async def power_off(inst: Any, lifecycle: Callable[[str, list[str]], None]) -> None:
    """Stop (or terminate, per its attribute) the running instance `inst` (moto's)."""
    if inst is None or str(inst.state) != "running":
        return
    iid, backend = str(inst.id), inst.ec2_backend
    action = "terminate" if getattr(inst, "instance_initiated_shutdown_behavior", "stop") == "terminate" else "stop"
    try:
        if action == "terminate":
            await asyncio.to_thread(backend.terminate_instances, [iid])
            lifecycle("TerminateInstances", [iid])
        else:
            await asyncio.to_thread(backend.stop_instances, [iid])
            lifecycle("StopInstances", [iid])
    except Exception:  # the daemon must outlive a failed stop; it is logged
        log.exception("%s: could not %s it after it powered itself off", iid, action)
        return
    log.info("%s: powered itself off (%s)", iid, action)
