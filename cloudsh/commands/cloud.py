"""Commands about the cloud itself: prices, and the local sandbox."""

from __future__ import annotations

import argparse
import shlex

from cloudsh.commands.registry import Context, arg, command
from cloudsh.commands.views import money, table
from cloudsh.config import Settings


@command(
    "prices",
    "Instance types with vCPUs, memory, GPUs, on-demand and current spot $/h.",
    arg("--gpu", flag=True, help="only types with GPUs"),
    arg("--family", "-f", kind="family", repeat=True, metavar="F", help="only this family (e.g. g5); repeatable"),
    arg("--json", flag=True, help="print one JSON document"),
)
async def prices(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import queries

    found = await queries.prices(ctx.backend, a.family or (), gpu_only=a.gpu)
    records = found.rows
    if not records and not found.source and not found.note:
        what = "GPU types" if a.gpu else "types"
        ctx.out.info(f"no {what} in families {', '.join(found.families)} in {ctx.backend.target.region}")
        if a.json:
            ctx.out.json([])
        return 0
    if a.json:
        # Each row's `note` says why its on_demand or spot is null; the line on stderr sums up.
        ctx.out.json(records)
    else:
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
        if found.source:
            ctx.out.info(f"prices: {found.source}")
    if found.note:
        ctx.out.info(f"missing prices: {found.note}")
    return 0


def _settings(ctx: Context) -> Settings:
    return Settings.load()


@command("sandbox up", "Start the local sandbox cloud in the background (idempotent).", needs_backend=False)
async def sandbox_up(ctx: Context, a: argparse.Namespace) -> int:
    import asyncio

    from cloudsh.sandbox.control import sandbox_up as up

    settings = _settings(ctx)
    st = await asyncio.to_thread(up, settings)
    ctx.out.print(f"sandbox running (pid {st.pid}): EC2 endpoint {st.endpoint}, region {st.region}")
    _say_lost_cloud(ctx, settings)
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

    settings = _settings(ctx)
    st = await asyncio.to_thread(up, settings)
    for key, value in env(st).items():
        ctx.out.print(f"export {key}={shlex.quote(value)}")
    _say_lost_cloud(ctx, settings)
    return 0


def _say_lost_cloud(ctx: Context, settings: Settings) -> None:
    """A cloud the sandbox could not restore is said once, by whoever starts it first."""
    from cloudsh.sandbox.persist import take_notice

    lost = take_notice(settings.sandbox_path)
    if lost:
        ctx.out.info(lost)
