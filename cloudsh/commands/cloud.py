"""Commands about the cloud itself: prices, and the local sandbox."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cloudsh.commands.registry import Context, arg, command
from cloudsh.commands.views import money, table
from cloudsh.config import Settings
from cloudsh.models import InstanceType

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend

#: Families shown by `prices` without --family: the usual CPU and GPU workhorses.
COMMON_FAMILIES = ("t3", "m5", "m6i", "c5", "g4dn", "g5", "g6", "p3", "p4d", "p5")


async def family_types(
    backend: Backend, families: Sequence[str] = COMMON_FAMILIES, *, gpu_only: bool = False
) -> dict[str, InstanceType]:
    """The types of these families offered in the region (what `prices` and the app list)."""
    offered = await backend.ec2.type_names()
    types = await backend.ec2.instance_types(n for n in offered if n.split(".", 1)[0] in families)
    return {k: v for k, v in types.items() if v.gpu_count or not gpu_only}


@command(
    "prices",
    "Instance types with vCPUs, memory, GPUs, on-demand and current spot $/h.",
    arg("--gpu", flag=True, help="only types with GPUs"),
    arg("--family", "-f", kind="family", repeat=True, metavar="F", help="only this family (e.g. g5); repeatable"),
    arg("--json", flag=True, help="print one JSON document"),
)
async def prices(ctx: Context, a: argparse.Namespace) -> int:
    b = ctx.backend
    families = tuple(a.family or COMMON_FAMILIES)
    types = await family_types(b, families, gpu_only=a.gpu)
    if not types:
        what = "GPU types" if a.gpu else "types"
        ctx.out.info(f"no {what} in families {', '.join(families)} in {b.target.region}")
        if a.json:
            ctx.out.json([])
        return 0
    price = await b.pricing.prices(sorted(types), strict=False)
    ordered = sorted(types.values(), key=lambda t: (t.family, t.vcpus, t.memory_gib))
    if not a.family:
        # Without a family filter, only types with a known price are worth a line.
        ordered = [t for t in ordered if t.name in price and price[t.name].on_demand is not None]
    records: list[dict[str, Any]] = []
    for t in ordered:
        p = price.get(t.name)
        records.append(
            {
                "type": t.name,
                "vcpus": t.vcpus,
                "memory_gib": t.memory_gib,
                "gpus": t.gpus,
                "gpu_memory_gib": t.gpu_memory_gib,
                "architectures": list(t.architectures),
                "on_demand": p.on_demand if p else None,
                "spot": p.spot if p else None,
                "spot_az": p.spot_az if p else None,
                "spot_saving": round(p.spot_saving, 3) if p and p.spot_saving is not None else None,
            }
        )
    if a.json:
        ctx.out.json(records)
        return 0
    rows = [
        {
            "type": r["type"],
            "vcpus": r["vcpus"],
            "mem": f"{r['memory_gib']:g} GiB",
            "gpus": r["gpus"] or "-",
            "od": money(r["on_demand"], ""),
            "spot": money(r["spot"], ""),
            "save": f"{r['spot_saving']:.0%}" if r["spot_saving"] is not None else "-",
        }
        for r in records
    ]
    cols = (("type", "TYPE"), ("vcpus", "VCPUS"), ("mem", "MEMORY"), ("gpus", "GPUS"),
            ("od", "ON-DEMAND $/H"), ("spot", "SPOT $/H"), ("save", "SAVING"))
    ctx.out.print(table(rows, cols))
    sample = next(iter(price.values()), None)
    if sample is not None:
        ctx.out.info(f"prices: {sample.source}")
    return 0


def _settings(ctx: Context) -> Settings:
    return Settings.load()


@command("sandbox up", "Start the local sandbox cloud in the background (idempotent).", needs_backend=False)
async def sandbox_up(ctx: Context, a: argparse.Namespace) -> int:
    import asyncio

    from cloudsh.sandbox.control import sandbox_up as up

    st = await asyncio.to_thread(up, _settings(ctx))
    ctx.out.print(f"sandbox running (pid {st.pid}): EC2 endpoint {st.endpoint}, region {st.region}")
    for line in st.degraded:
        ctx.out.info(f"degraded: {line}")
    ctx.out.info("use it from other tools with: eval \"$(cloudsh sandbox env)\"")
    return 0


@command("sandbox down", "Stop the local sandbox cloud and everything it started.", needs_backend=False)
async def sandbox_down(ctx: Context, a: argparse.Namespace) -> int:
    import asyncio

    from cloudsh.sandbox.control import sandbox_down as down

    was = await asyncio.to_thread(down, _settings(ctx))
    ctx.out.print("sandbox stopped" if was else "sandbox was not running")
    return 0


@command("sandbox status", "Say whether the local sandbox cloud runs, where, and its boxes.", needs_backend=False)
async def sandbox_status(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.sandbox.control import sandbox_status as status

    st = status(_settings(ctx))
    if st is None:
        ctx.out.print("sandbox not running (start it with `cloudsh sandbox up`)")
        return 0
    ready = sum(1 for i in st.instances.values() if i.ready)
    ctx.out.print(
        f"sandbox running (pid {st.pid}): EC2 endpoint {st.endpoint}, region {st.region}, "
        f"isolation {st.isolation}, {ready} box(es) answering SSH"
    )
    for line in st.degraded:
        ctx.out.info(f"degraded: {line}")
    return 0


@command("sandbox env", "Print `export` lines so the AWS CLI and boto3 use the sandbox too.", needs_backend=False)
async def sandbox_env(ctx: Context, a: argparse.Namespace) -> int:
    import asyncio

    from cloudsh.sandbox.control import sandbox_env as env
    from cloudsh.sandbox.control import sandbox_up as up

    st = await asyncio.to_thread(up, _settings(ctx))
    for key, value in env(st).items():
        ctx.out.print(f"export {key}={shlex.quote(value)}")
    return 0
