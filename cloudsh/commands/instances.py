"""Instance lifecycle commands: ls, launch, start, stop, terminate, resize."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudsh.commands.registry import Context, arg, command, gigabytes
from cloudsh.commands.views import (
    FOREIGN_NOTE,
    INSTANCE_COLUMNS,
    OWNER_COLUMN,
    box_sections,
    burn_rate,
    foreign,
    instance_row,
    money,
    table,
)
from cloudsh.errors import CapacityError, ConfirmationRefused, InvalidState, UsageError
from cloudsh.models import INTERRUPTED_HINT, Instance

if TYPE_CHECKING:
    from cloudsh.ops.move import MovePlan


async def find_all(
    ctx: Context, names: Sequence[str], verb: str = "", *, destructive: bool = False
) -> list[Instance]:
    """Resolve every NAME before acting on any, so a typo changes nothing. With a `verb`,
    refuse before anything is asked or done what `ops.owners` forbids on boxes cloudsh did
    not launch (the workflows check it again)."""
    from cloudsh.ops.owners import check_acts_on, whose
    from cloudsh.services.ec2 import resolve_name

    everything = await ctx.backend.ec2.list_instances(include_terminated=True)
    found: list[Instance] = []
    for name in names:
        inst = resolve_name(name, everything)
        if inst not in found:
            found.append(inst)
    if verb:
        check_acts_on(found, verb, by_id=names, destructive=destructive)
        for inst in found:
            if not inst.managed:  # allowed alone: say whose it looks like all the same
                ctx.out.info(whose(inst))
    return found


@command(
    "ls",
    "List instances with type, GPUs, state, market and $/h.",
    arg("--all", "-a", flag=True, help="include terminated instances"),
    arg("--json", flag=True, help="print one JSON document"),
    aliases=("list", "instances"),
)
async def ls(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.jobs import catch_up
    from cloudsh.ops.queries import listing

    insts = await ctx.backend.ec2.list_instances(include_terminated=a.all)
    records = await listing(ctx.backend, instances=insts)
    # Boxes EC2 restarted under a job: their results come home now (on stderr, so `--json` stays clean).
    await catch_up(ctx.backend, insts, progress=ctx.out.info)
    if a.json:
        ctx.out.json(records)
        return 0
    if not records:
        ctx.out.info("no instances; start one with `cloudsh launch NAME`")
        return 0
    strangers = any(foreign(r) for r in records)
    columns = INSTANCE_COLUMNS + (OWNER_COLUMN,) if strangers else INSTANCE_COLUMNS
    ctx.out.print(table([instance_row(r) for r in records], columns))
    running = [r for r in records if r["state"] == "running"]
    ctx.out.info(f"{len(running)} running, burning {money(burn_rate(records))}")
    if strangers:
        ctx.out.info(FOREIGN_NOTE)
    for r in records:
        if r.get("interrupted"):
            ctx.out.info(f"{r['name'] or r['id']}: {INTERRUPTED_HINT.format(name=r['name'] or r['id'])}")
    return 0


@command(
    "show",
    "One box in full: type and GPUs, state and why, price and cost so far, image, addresses and the ssh "
    "command, volumes and mount points, SSH rules, jobs, tags.",
    arg("name", kind="instance", metavar="NAME"),
    arg("--json", flag=True, help="print one JSON document"),
    aliases=("describe",),
)
async def show(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.show import box_record

    rec = await box_record(ctx.backend, a.name)
    if a.json:
        ctx.out.json(rec)
        return 0
    for title, lines in box_sections(rec):
        if title:
            ctx.out.print(f"\n{title}")
        ctx.out.print("\n".join(("  " if title else "") + line for line in lines))
    return 0


@command(
    "launch",
    "Launch a new instance and wait until SSH answers.",
    arg("name", help="Name tag for the new box (unique among live instances)"),
    arg("--type", "-t", kind="type", help="instance type (default: t3.medium or your config)"),
    arg("--spot", flag=True, help="spot instance (persistent request that stops, not terminates, on interruption)"),
    arg("--disk", kind="", type=gigabytes, metavar="GB", help="root volume size in GB (default 60, or the image's own size if larger)"),
    arg("--image", kind="image", metavar="AMI_OR_NAME", help="AMI id or name (default: current Ubuntu LTS)"),
    arg("--az", metavar="AZ", help="this Availability Zone only (default: every AZ that offers the type, cheapest spot first)"),
    arg("--subnet", metavar="SUBNET", help="launch into this subnet (needed where the account has no default VPC)"),
    arg("--no-wait", flag=True, help="return once EC2 accepted the launch"),
    arg("--idle-stop", metavar="AFTER|off", help="stop itself after this long idle, e.g. 45m (default: the idle_stop setting, 60m)"),
    arg("--yes", "-y", flag=True, help="launch even above the confirm_above_per_hour setting without asking"),
)
async def launch(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import instances as ops
    from cloudsh.ops.money import price_gate

    b = ctx.backend
    plan = await ops.plan_launch(
        b, a.name, instance_type=a.type, spot=a.spot, disk_gb=a.disk, image=a.image, az=a.az, subnet=a.subnet,
        idle_stop=a.idle_stop,
    )
    ctx.out.info(await price_gate(b, plan.itype.name, spot=plan.spot, yes=a.yes, ask=ctx.confirm, verb="launch"))
    inst = await ops.launch(b, plan, wait=not a.no_wait, progress=ctx.out.info)
    ctx.out.print(f"{inst.label} {inst.id} {inst.type} {'ready' if not a.no_wait else inst.state}")
    return 0


async def _start_or_stop(ctx: Context, a: argparse.Namespace, verb: str) -> int:
    from cloudsh.ops import instances as ops

    insts = await find_all(ctx, a.names, verb, destructive=verb == "stop")
    if verb == "stop":
        from cloudsh.ops.jobs import running_jobs

        running = await running_jobs(ctx.backend, insts)
        if running:
            names = ", ".join(i.label for i in insts)
            listed = ", ".join(f"{j.id} on {j.instance_name}" for j in running)
            await ctx.confirmed(
                f"Stop {names}? Running jobs stop with it: {listed}.\n"
                "`cloudsh job resume JOB` runs them again once the box is started. Stop?",
                yes=a.yes, what=f"stop {names} while jobs run ({listed})",
            )
    if verb == "start":
        done = await ops.start(ctx.backend, insts, wait=not a.no_wait, progress=ctx.out.info)
    else:
        done = await ops.stop(ctx.backend, insts, wait=not a.no_wait, by_id=a.names, progress=ctx.out.info)
    for inst in done:
        ctx.out.print(f"{inst.label} {inst.state}")
    return 0


@command("start", "Start stopped instances and wait until SSH answers.",
         arg("names", nargs="+", kind="instance", metavar="NAME"),
         arg("--no-wait", flag=True, help="do not wait for SSH"))
async def start(ctx: Context, a: argparse.Namespace) -> int:
    return await _start_or_stop(ctx, a, "start")


@command("stop", "Stop instances (the disk is kept; you pay only for storage); asks when jobs run there.",
         arg("names", nargs="+", kind="instance", metavar="NAME"),
         arg("--no-wait", flag=True, help="do not wait until stopped"),
         destructive=True)
async def stop(ctx: Context, a: argparse.Namespace) -> int:
    return await _start_or_stop(ctx, a, "stop")


@command(
    "terminate",
    "Terminate instances for good: pulls home every job's results it can, then asks, listing what will be lost.",
    arg("names", nargs="+", kind="instance", metavar="NAME"),
    arg("--discard-results", flag=True,
        help="with --yes and no terminal: go ahead even though results cannot come home (they are lost)"),
    destructive=True,
)
async def terminate(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import instances as ops
    from cloudsh.ops.preview import bring_home, terminate_preview

    insts = await find_all(ctx, a.names, "terminate", destructive=True)
    gone = [i for i in insts if i.state == "terminated"]
    if gone:
        raise InvalidState(f"{gone[0].label} is already terminated", "nothing to do")  # as `stop` says it: exit 1
    what = "terminate " + ", ".join(i.label for i in insts)
    if not a.yes and ctx.confirm is None:
        await ctx.confirmed("", yes=False, what=what)  # refused in one line, before anything is copied
    await bring_home(ctx.backend, insts, progress=ctx.out.info)
    losses = await terminate_preview(ctx.backend, insts)
    lost = [line for loss in losses for line in loss.lost()]
    if a.yes:
        for line in [line for loss in losses for line in loss.lost() + loss.notes()]:
            ctx.out.info(line)
        if lost and ctx.confirm is None and not a.discard_results:
            raise ConfirmationRefused(
                f"refusing to terminate {', '.join(i.label for i in insts)}: {len(lost)} thing"
                f"{'s' if len(lost) != 1 else ''} cannot come home (each said above)",
                "bring them home first (`cloudsh sync`, or wait for the jobs), or add --discard-results to lose them",
            )
    question = "Terminate " + "\n".join(loss.describe() for loss in losses) + "\nThis cannot be undone. Terminate?"
    await ctx.confirmed(question, yes=a.yes, what=what)
    await ops.terminate(ctx.backend, insts, by_id=a.names, progress=ctx.out.info)
    for inst in insts:
        ctx.out.print(f"{inst.label} terminated")
    return 0


@command(
    "resize",
    "Change an instance's type (\"add a GPU\"): install the NVIDIA driver if missing, stop if running, "
    "change, start again.\nA spot box moves to a new box of the new type (EC2 cannot change a spot box's type).",
    arg("name", kind="instance"),
    arg("type", kind="type", metavar="TYPE"),
    destructive=True,
    aliases=("add-gpu",),
)
async def resize(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import move as ops
    from cloudsh.ops.money import price_gate

    [inst] = await find_all(ctx, [a.name], "resize", destructive=True)
    plan = await ops.plan_resize(ctx.backend, inst, a.type, by_id=[a.name])
    price = await price_gate(ctx.backend, plan.new.name, spot=inst.market == "spot", az=inst.az,
                             yes=a.yes, ask=ctx.confirm, verb="resize to")
    if isinstance(plan, ops.MovePlan):
        ctx.out.info(price)
        return await _move(ctx, plan, a.yes)
    if inst.state == "running" and a.yes:
        ctx.out.info(plan.describe())  # the $/h before and after, even unasked
    if inst.state == "running":
        await ctx.confirmed(
            plan.describe() + "\nRunning programs on it will be stopped. Go ahead?",
            yes=a.yes,
            what=f"restart {inst.label}",
        )
    else:
        ctx.out.info(plan.describe())
    ctx.out.info(price)  # once it goes ahead: a refusal is one line
    confirm = ctx.confirm

    async def go_back(exc: CapacityError) -> bool:
        # Offer the previous type back, so the box is not left stopped.
        return confirm is not None and await confirm(f"{exc.message}.\nGo back to {plan.old.name} and start it?")

    inst = await ops.resize(ctx.backend, plan, go_back=go_back, progress=ctx.out.info)
    ctx.out.print(f"{inst.label} {inst.type} {inst.state}")
    return 0


@command(
    "relaunch",
    "A new box from an image of this one's disk: same name, volumes and jobs, now.\n"
    "For a spot box waiting after an interruption; the old box is terminated once the new one answers SSH.",
    arg("name", kind="instance"),
    arg("--spot", flag=True, help="the new box runs as spot (default: as the old one did)"),
    arg("--on-demand", flag=True, help="the new box runs on-demand"),
    arg("--type", "-t", kind="type", help="the new box's type (default: the old one's)"),
    destructive=True,
)
async def relaunch(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import move as ops

    if a.spot and a.on_demand:
        raise UsageError("--spot and --on-demand contradict each other", "pick one")
    [inst] = await find_all(ctx, [a.name], "relaunch", destructive=True)
    spot = True if a.spot else False if a.on_demand else None
    plan = await ops.plan_move(ctx.backend, inst, "relaunch", new_type=a.type, spot=spot, by_id=[a.name])
    return await _move(ctx, plan, a.yes)


async def _move(ctx: Context, plan: MovePlan, yes: bool) -> int:
    from cloudsh.ops import move as ops

    ctx.out.info(plan.describe())
    await ctx.confirmed("Go ahead?", yes=yes, what=f"{plan.verb} {plan.instance.label}")
    inst = await ops.move(ctx.backend, plan, progress=ctx.out.info)
    ctx.out.print(f"{inst.label} {inst.id} {inst.type} {inst.market} {inst.state}")
    return 0
