"""Money commands: cost, budget, orphans."""

from __future__ import annotations

import argparse
import re

from cloudsh.commands.registry import Context, arg, command
from cloudsh.commands.views import money, table
from cloudsh.errors import CloudshError, UsageError


@command(
    "cost",
    "Money now: compute and public IPv4 $/h, storage $/month, month to date and projected (an estimate from list prices).",
    arg("--json", flag=True, help="print one JSON document"),
)
async def cost(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.money import cost_report

    report = await cost_report(ctx.backend)
    rec = report.record()
    if a.json:
        ctx.out.json(rec)
        return 0
    rows = [
        {"kind": i.kind, "id": i.id, "name": i.name or "-", "hour": money(i.per_hour, ""),
         "month": money(i.per_month, ""), "mtd": money(i.month_to_date, "")}
        for i in report.items
    ]
    if rows:
        cols = (("kind", "KIND"), ("id", "ID"), ("name", "NAME"), ("hour", "$/H"), ("month", "$/MONTH"),
                ("mtd", "THIS MONTH"))
        ctx.out.print(table(rows, cols))
        ctx.out.print()
    ctx.out.print(f"compute      {money(rec['compute_per_hour'])}")
    ctx.out.print(f"public IPv4  {money(rec['ipv4_per_hour'])}")
    ctx.out.print(f"storage      {money(rec['storage_per_month'], '/month')}")
    ctx.out.print(f"month so far {money(rec['month_to_date'], '')}")
    ctx.out.print(f"projected    {money(rec['month_projection'], '')} by the month's end")
    if rec["aws_month_to_date"] is not None:
        ctx.out.print(f"AWS's figure {money(rec['aws_month_to_date'], '')} so far ({rec['aws_note']})")
    elif rec["aws_note"]:
        ctx.out.info(f"AWS's own figure: {rec['aws_note']}")
    if report.budget:
        ctx.out.print(f"budget       {money(report.budget, '/month')} ({rec['budget_used']:.0%} projected)")
    ctx.out.info(f"{rec['region']}: {rec['note']}")
    return 0


def _usd(text: str) -> float | None:
    if text == "off":
        return None
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars (or `off`)") from None
    if not 0 < value < 10_000_000:
        raise argparse.ArgumentTypeError(f"{text} must be a positive amount of dollars")
    return value


def _email(text: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an email address")
    return text


@command(
    "budget",
    "Set a monthly budget in $ (or `off`); every front end warns as the projection passes 50 %, 80 % and 100 %.",
    arg("usd", type=_usd, metavar="USD_PER_MONTH|off", help="dollars per month, e.g. 50, or off"),
    arg("--email", type=_email, metavar="ADDRESS",
        help="also an AWS Budgets alert: AWS emails ADDRESS as the cost nears and passes the budget (AWS only)"),
)
async def budget(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.money import apply_budget, cost_report

    if a.usd is None and a.email:
        raise UsageError("--email goes with an amount", "e.g. `cloudsh budget 50 --email you@example.org`")
    line = await apply_budget(ctx.backend, a.usd, a.email)
    if line:
        ctx.out.info(line)
    if a.usd is None:
        ctx.out.print("budget off")
        return 0
    report = await cost_report(ctx.backend)
    share = report.month_projection / a.usd
    ctx.out.print(f"budget {money(a.usd, '/month')}; this month is projected at "
                  f"{money(report.month_projection, '')} ({share:.0%})")
    return 0


def _orphan_rows(records: list[dict[str, object]]) -> str:
    rows = [
        {"kind": r["kind"], "id": r["id"], "name": r["name"] or "-", "region": r["region"],
         "month": money(float(r["per_month"]), ""),  # type: ignore[arg-type]
         "age": "?" if r["age_days"] is None else f"{r['age_days']:.0f}d", "why": r["why"]}
        for r in records
    ]
    cols = (("kind", "KIND"), ("id", "ID"), ("name", "NAME"), ("region", "REGION"), ("month", "$/MONTH"),
            ("age", "AGE"), ("why", "WHY"))
    return table(rows, cols)


@command(
    "orphans",
    "Storage, addresses, key pairs and groups that bill or linger with nothing using them, with $/month each.",
    arg("--all-regions", flag=True, help="sweep every region (in parallel)"),
    arg("--json", flag=True, help="print one JSON document"),
)
async def orphans(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.orphans import sweep

    found = await sweep(ctx.backend, all_regions=a.all_regions)
    records = [o.record() for o in found.orphans]
    for region, why in found.failed:
        ctx.out.info(f"{region}: not swept: {why}")
    if a.json:
        ctx.out.json(records)
    elif records:
        ctx.out.print(_orphan_rows(records))
        ctx.out.info(f"{len(records)} orphan(s), {money(found.per_month, '/month')}; "
                     "`cloudsh orphans clean` deletes them")
    else:
        ctx.out.info("no orphans")
    return 0


@command(
    "orphans clean",
    "Delete the orphans `orphans` lists (shows what goes and what it saves, then asks).",
    arg("--all-regions", flag=True, help="every region, not just this one"),
    destructive=True,
)
async def orphans_clean(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops.orphans import clean, sweep

    found = await sweep(ctx.backend, all_regions=a.all_regions)
    for region, why in found.failed:
        ctx.out.info(f"{region}: not swept: {why}")
    if not found.orphans:
        ctx.out.info("no orphans; nothing to delete")
        return 0
    listing = _orphan_rows([o.record() for o in found.orphans])
    question = (f"{listing}\nThese {len(found.orphans)} will be deleted for good, saving "
                f"{money(found.per_month, '/month')}. Delete them?")
    if a.yes:
        ctx.out.info(listing)
    await ctx.confirmed(question, yes=a.yes, what=f"delete {len(found.orphans)} orphan(s)")
    failed = await clean(ctx.backend, found.orphans, tell=ctx.out.info)
    for o, why in failed:
        ctx.out.info(f"could not delete {o.kind} {o.id} ({o.region}): {why}")
    saved = found.per_month - sum(o.per_month for o, _ in failed)
    ctx.out.print(f"deleted {len(found.orphans) - len(failed)} orphan(s), saving {money(saved, '/month')}")
    if failed:
        raise CloudshError(f"{len(failed)} orphan(s) could not be deleted", "see the lines above")
    return 0
