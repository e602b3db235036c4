"""Background tunnels: `tunnel NAME PORT --background`, `tunnels`, `tunnel close`.

The forwards live in the per-user keeper process (`cloudsh.tunneld`, reached through
`ops/background.py`), so they outlive the terminal that opened them."""

from __future__ import annotations

import argparse

from cloudsh.commands.registry import Context, arg, command
from cloudsh.config import Settings

COLUMNS = (("box", "BOX"), ("url", "LOCAL"), ("remote", "REMOTE PORT"), ("state", "STATE"), ("moved", "MOVED"), ("note", "NOTE"))


async def open_in_background(ctx: Context, box: str, ports: list[tuple[int, int]], *, browse: bool = False) -> int:
    from cloudsh.ops.background import open_background
    from cloudsh.ops.jupyter import open_urls

    b = ctx.backend
    target = b.target
    opened = await open_background(
        b.settings, box, ports, sandbox=b.sandbox, profile=target.profile, region=target.region
    )
    for t in opened:
        ctx.out.print(f"{t.url} -> {t.box}:{t.remote}")
        if t.jupyter:
            ctx.out.print(f"Jupyter: {t.jupyter}")
    for line in await open_urls([t.jupyter for t in opened]) if browse else []:
        ctx.out.info(line)
    ctx.out.info(f"kept in the background; see `cloudsh tunnels`, end with `cloudsh tunnel close {box}`")
    return 0


@command(
    "tunnels",
    "List the background tunnels: state (open, reconnecting, box stopped) and bytes moved.",
    arg("--json", flag=True, help="print one JSON document"),
    needs_backend=False,
)
async def tunnels(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.background import list_background
    from cloudsh.ops.records import table

    kept = await list_background(Settings.load())
    if a.json:
        ctx.out.json([t.as_json() for t in kept])
    elif not kept:
        ctx.out.info("no background tunnels; open one with `cloudsh tunnel NAME PORT --background`")
    else:
        rows = [{"box": t.box, "url": t.jupyter or t.url, "remote": t.remote, "state": t.state, "moved": t.moved_text,
                 "note": t.note} for t in kept]
        ctx.out.print(table(rows, COLUMNS))
    return 0


@command(
    "tunnel close",
    "End the background tunnels to an instance (only the one on local PORT, if given).",
    arg("name", kind="instance"),
    arg("port", nargs="?", type=int, kind="port", metavar="PORT"),
    needs_backend=False,
)
async def tunnel_close(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.background import close_background

    for t in await close_background(Settings.load(), a.name, a.port):
        ctx.out.info(f"closed {t.url} -> {t.box}:{t.remote} ({t.moved_text} moved)")
    return 0
