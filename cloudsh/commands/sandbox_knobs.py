"""Knobs of the running sandbox that play EC2's limits: `sandbox capacity`, `sandbox quota`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cloudsh.commands.registry import Context, arg, command
from cloudsh.config import Settings


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (-1 for unlimited)") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"{value}: use a count of 0 or more, or -1 for unlimited")
    return value


def _ask(path: str, doc: dict[str, Any]) -> Any:
    from cloudsh.sandbox.control import sandbox_request, sandbox_up

    settings = Settings.load()
    sandbox_up(settings)
    return sandbox_request(settings, path, doc)


@command(
    "sandbox capacity",
    "Set how many more instances of a type may start in an AZ of the sandbox (-1: unlimited).",
    arg("type", kind="type", help="instance type, e.g. g5.xlarge"),
    arg("az", help="Availability Zone, e.g. us-east-1a"),
    arg("count", type=_count, metavar="N", help="how many more may start; 0 = none, -1 = unlimited"),
    needs_backend=False,
    epilog="Beyond it, RunInstances and StartInstances fail with InsufficientInstanceCapacity, "
    "as on EC2. Raising it lets the sandbox restart what waits for that capacity.",
)
async def sandbox_capacity(ctx: Context, a: argparse.Namespace) -> int:
    doc = {"instance_type": a.type, "az": a.az, "count": a.count}
    answer = await asyncio.to_thread(_ask, "/_sandbox/capacity", doc)
    left = answer.get("count")
    ctx.out.print(f"{a.type} in {a.az}: {'unlimited' if left is None else f'{left} more may start'}")
    return 0


def _vcpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of vCPUs") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g}: a quota is 0 vCPUs or more")
    return value


@command(
    "sandbox quota",
    "Set an EC2 vCPU quota of the sandbox (Service Quotas code, e.g. L-DB2E81BA for on-demand G and VT).",
    arg("code", help="quota code, e.g. L-DB2E81BA (Running On-Demand G and VT instances)"),
    arg("value", type=_vcpus, metavar="VCPUS", help="how many vCPUs of that class may run at once"),
    needs_backend=False,
    epilog="Launches and starts past it fail as on EC2: VcpuLimitExceeded (on-demand), "
    "MaxSpotInstanceCountExceeded (spot).",
)
async def sandbox_quota(ctx: Context, a: argparse.Namespace) -> int:
    answer = await asyncio.to_thread(_ask, "/_sandbox/quota", {"code": a.code, "value": a.value})
    ctx.out.print(f"{answer.get('name', a.code)} ({a.code}): {a.value:g} vCPUs")
    return 0
