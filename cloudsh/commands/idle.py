"""The idle stop: `idle NAME` says why a box is awake; `idle NAME AFTER|off` sets it."""

from __future__ import annotations

import argparse

from cloudsh.commands.registry import Context, arg, command


@command(
    "idle",
    "Why a box is awake and when it stops itself; `idle NAME 45m` sets (or snoozes) its idle stop, "
    "`idle NAME off` turns it off.",
    arg("name", kind="instance", metavar="NAME"),
    arg("after", nargs="?", metavar="AFTER|off", help="idle time before it stops, e.g. 45m, 90s, 2h, or off"),
    arg("--keep-alive", repeat=True, metavar="PATTERN",
        help="a process whose command line contains PATTERN keeps the box awake (repeatable; replaces the list)"),
    arg("--json", flag=True, help="print one JSON document"),
)
async def idle(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.commands.instances import find_all
    from cloudsh.ops.idle import describe, idle_report, parse_after, set_idle_stop

    after = parse_after(a.after) if a.after is not None else None  # bad input fails before anything is done
    [inst] = await find_all(ctx, [a.name], "idle")
    if a.after is not None or a.keep_alive:
        if a.after is None:  # only --keep-alive: the box keeps its idle time
            after = (await idle_report(ctx.backend, inst))["idle_stop_after_s"] or parse_after(
                ctx.backend.settings.idle_stop)
        line = await set_idle_stop(ctx.backend, inst, after, keep_alive=a.keep_alive or None)
        ctx.out.info(line)
    rec = await idle_report(ctx.backend, inst)
    if a.json:
        ctx.out.json(rec)
    else:
        for line in describe(rec):
            ctx.out.print(line)
    return 0
