"""Money: what the account costs now, this month so far and by the month's end (`cost`),
a monthly budget that every front end warns about once per threshold crossing (`budget`),
and the price gate that `launch` and `resize` pass before anything is created.

Every figure is an estimate from list prices: compute at the price each box really pays
(a spot box at its own AZ's current spot price), public IPv4 addresses by the hour, EBS
volumes, snapshots and images' snapshots by the GB-month. EC2's API knows when a box last
started, not how long it ran before, so the month so far counts each box's current run.
"""

from __future__ import annotations

import asyncio
import calendar
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudsh.config import Settings
from cloudsh.errors import ConfirmationRefused, Declined
from cloudsh.models import (
    HOURS_PER_MONTH,
    box_hourly,
    ipv4_hourly,
    snapshot_monthly,
    volume_monthly,
)

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend
    from cloudsh.services.costs import AwsFigure

#: Shares of the budget at which every front end says so, once per crossing.
THRESHOLDS = (0.5, 0.8, 1.0)
ESTIMATE_NOTE = (
    "estimate from list prices (compute at each box's own price, public IPv4 at $0.005/h, EBS by the "
    "GB-month); the month so far counts each box's current run, since EC2 does not say how long "
    "it ran before"
)


@dataclass(frozen=True)
class CostItem:
    """One thing that bills: a box's compute, a public address, a volume, a snapshot, an image."""

    kind: str  # compute, ipv4, volume, snapshot, image
    id: str
    name: str
    per_hour: float | None  # compute and ipv4
    per_month: float  # what a whole month of it costs
    month_to_date: float
    month_projection: float
    note: str = ""


@dataclass(frozen=True)
class CostReport:
    items: list[CostItem]
    budget: float | None
    at: datetime
    region: str = ""
    #: AWS's own figure for the month so far (Cost Explorer), when known.
    aws_month_to_date: float | None = None
    aws_note: str = ""

    def total(self, what: str, kinds: tuple[str, ...] = ()) -> float:
        vals = [getattr(i, what) or 0.0 for i in self.items if not kinds or i.kind in kinds]
        return round(sum(vals), 4)

    @property
    def month_projection(self) -> float:
        return self.total("month_projection")

    def record(self) -> dict[str, Any]:
        """`cost --json`: the totals are the sums of the items."""
        storage = ("volume", "snapshot", "image")
        return {
            "compute_per_hour": self.total("per_hour", ("compute",)),
            "ipv4_per_hour": self.total("per_hour", ("ipv4",)),
            "storage_per_month": self.total("per_month", storage),
            "month_to_date": self.total("month_to_date"),
            "month_projection": self.month_projection,
            "budget": self.budget,
            "budget_used": round(self.month_projection / self.budget, 3) if self.budget else None,
            "region": self.region,
            "at": self.at.isoformat(),
            "note": ESTIMATE_NOTE,
            "aws_month_to_date": self.aws_month_to_date,
            "aws_note": self.aws_note,
            "items": [
                {k: getattr(i, k) for k in CostItem.__dataclass_fields__} for i in self.items
            ],
        }


def _month(now: datetime) -> tuple[datetime, datetime, float]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(now.year, now.month)[1]
    return start, start.replace(day=days, hour=23, minute=59, second=59), days * 24.0


def _hours(a: datetime, b: datetime) -> float:
    return max(0.0, (b - a).total_seconds() / 3600)


def _item(kind: str, id: str, name: str, *, per_hour: float | None = None, per_month: float = 0.0,
          since: datetime | None, now: datetime, note: str = "") -> CostItem:
    """An item billed from `since` (the month's start if earlier or unknown) to the month's end."""
    start, end, month_h = _month(now)
    begin = max(since, start) if since else start
    if per_hour is not None:
        mtd, proj, per_month = per_hour * _hours(begin, now), per_hour * _hours(begin, end), per_hour * HOURS_PER_MONTH
    else:  # EBS bills GB-months pro rata by the second ("Amazon EBS pricing", https://aws.amazon.com/ebs/pricing/)
        mtd = per_month * _hours(begin, now) / month_h
        proj = per_month * _hours(begin, end) / month_h
    return CostItem(kind, id, name, None if per_hour is None else round(per_hour, 4), round(per_month, 4),
                    round(mtd, 4), round(proj, 4), note)


async def cost_report(backend: Backend, *, now: datetime | None = None) -> CostReport:
    """What the account bills in the backend's region now, so far this month and by its end
    (5 listing calls and one price lookup, in parallel)."""
    now = now or datetime.now(UTC)
    ec2, region = backend.ec2, backend.target.region
    (insts, vols, snaps, imgs, addrs), aws = await asyncio.gather(
        asyncio.gather(ec2.list_instances(), ec2.volumes(), ec2.snapshots(), ec2.images(), ec2.addresses()),
        asyncio.to_thread(aws_figure, backend),
    )
    running = [i for i in insts if i.state in ("running", "pending")]
    prices = await backend.pricing.prices(
        sorted({i.type for i in running}), strict=False, spot_for=sorted({i.type for i in running if i.market == "spot"})
    )
    items: list[CostItem] = []
    for inst in running:
        usd, note = box_hourly(prices.get(inst.type), inst.market, inst.az)
        if usd is None:
            note = f"no price known for {inst.type}: {prices.why(inst.type)}"
        items.append(_item("compute", inst.id, f"{inst.label} ({inst.type} {inst.market})", per_hour=usd or 0.0,
                           since=inst.launch_time, now=now, note=note))
    eips = {a.public_ip for a in addrs}
    for inst in running:
        if inst.public_ip and inst.public_ip not in eips:
            items.append(_item("ipv4", inst.public_ip, inst.label, per_hour=ipv4_hourly(region),
                               since=inst.launch_time, now=now))
    # Every public IPv4 address bills $0.005/h, an Elastic IP attached or not (AWS "Amazon
    # VPC pricing", https://aws.amazon.com/vpc/pricing/); its allocation time is not in the API.
    for a in addrs:
        items.append(_item("ipv4", a.allocation_id, a.public_ip, per_hour=ipv4_hourly(region), since=None, now=now,
                           note="Elastic IP, counted from the month's start"))
    for v in vols:
        items.append(_item("volume", v.id, v.name or v.attached_to or "", per_month=volume_monthly(v, region),
                           since=v.created, now=now, note=f"{v.size_gb} GB {v.volume_type}"))
    in_images = {sid for img in imgs for sid in img.snapshot_ids}
    sizes = {s.id: s.size_gb for s in snaps}
    for s in snaps:
        if s.id not in in_images:
            items.append(_item("snapshot", s.id, s.name, per_month=snapshot_monthly(s.size_gb, region),
                               since=s.started, now=now, note=f"at most {s.size_gb} GB"))
    for img in imgs:
        size = sum(sizes.get(sid, 0) for sid in img.snapshot_ids)
        items.append(_item("image", img.id, img.name, per_month=snapshot_monthly(size, region),
                           since=img.created, now=now, note=f"snapshots of at most {size} GB"))
    report = CostReport(items, read_budget(backend.settings).usd, now, region, aws.usd if aws else None,
                        aws.note if aws else "Cost Explorer is not part of the sandbox")
    remember_projection(backend.settings, report.month_projection, now)
    return report


def aws_figure(backend: Backend) -> AwsFigure | None:
    """Blocks: AWS's own month so far (at most one Cost Explorer request a day); None on the sandbox."""
    if backend.sandbox:
        return None
    from cloudsh.services.costs import CostExplorer

    return CostExplorer(backend.clients, backend.settings.cache_dir).month_to_date()


# -- the budget ------------------------------------------------------------------


@dataclass
class BudgetState:
    """What `budget.json` in the state dir holds: the budget, the last projection, and the
    highest threshold each front end has announced this month."""

    usd: float | None = None
    month: str = ""
    projection: float | None = None
    projected_at: float = 0.0
    said: dict[str, float] | None = None
    #: Where AWS Budgets emails its alerts (`budget USD --email`), on AWS only.
    email: str | None = None


def _budget_path(settings: Settings) -> Path:
    return settings.state_dir / "budget.json"


def read_budget(settings: Settings) -> BudgetState:
    try:
        raw = json.loads(_budget_path(settings).read_text())
        return BudgetState(
            float(raw["usd"]) if raw.get("usd") is not None else None, str(raw.get("month", "")),
            float(raw["projection"]) if raw.get("projection") is not None else None,
            float(raw.get("projected_at", 0.0)), {str(k): float(v) for k, v in (raw.get("said") or {}).items()},
            str(raw["email"]) if raw.get("email") else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return BudgetState()


def _write_budget(settings: Settings, state: BudgetState) -> None:
    path = _budget_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.__dict__))
        tmp.replace(path)
    except OSError:
        pass  # the warning is a courtesy; never fail a command over it


def set_budget(settings: Settings, usd: float | None, *, email: str | None = None) -> None:
    """Store (or with None, drop) the monthly budget; every front end may warn afresh."""
    state = read_budget(settings)
    state.usd, state.said, state.email = usd, {}, email if usd else None
    _write_budget(settings, state)


async def apply_budget(backend: Backend, usd: float | None, email: str | None = None) -> str | None:
    """`budget USD [--email ADDRESS]` and `budget off`: the AWS Budgets email alert first (so
    a refusal changes nothing), then the budget every front end warns about. A later
    `budget USD` keeps the alert's email at the new amount; `off` deletes it. The line to
    say about the alert, None when there is none."""
    stored = read_budget(backend.settings).email
    line = None
    if backend.sandbox:  # no AWS budget to change: one set on AWS stays as it is
        line = "email alerts need AWS: the sandbox does not serve the AWS Budgets API" if email else None
        email = stored
    elif email := email or stored:
        from cloudsh.services.budgets import BUDGET_NAME, BudgetAlerts

        alerts = BudgetAlerts(backend.clients)
        if usd is None:
            await alerts.delete()
            line = f"AWS budget {BUDGET_NAME} deleted: no more emails to {email}"
        else:
            done = "created" if await alerts.put(usd, email) else "updated"
            line = (f"AWS budget {BUDGET_NAME} {done}: AWS emails {email} when the month's cost passes 80 % "
                    f"and 100 % of ${usd:,.2f}, and when it forecasts more than that")
    set_budget(backend.settings, usd, email=email)
    return line


def remember_projection(settings: Settings, projection: float, now: datetime) -> None:
    state = read_budget(settings)
    state.projection, state.projected_at = projection, now.timestamp()
    _write_budget(settings, state)


def budget_level(projection: float, budget: float) -> float:
    """The highest threshold the projection has reached (0 when none)."""
    return max((t for t in THRESHOLDS if projection >= t * budget), default=0.0)


def budget_warning(settings: Settings, front: str, *, now: datetime | None = None) -> str | None:
    """The line `front` (cli, app, repl) should say now, once per threshold crossing: None
    when no budget is set, the projection is under 50 %, or this crossing was said. A
    projection that falls back below a threshold lets its next crossing be said again."""
    state = read_budget(settings)
    if not state.usd or state.projection is None:
        return None
    month = (now or datetime.now(UTC)).strftime("%Y-%m")
    said = dict(state.said or {}) if state.month == month else {}
    level = budget_level(state.projection, state.usd)
    before = said.get(front, 0.0)
    if level == before:
        return None
    said[front] = level
    state.said, state.month = said, month
    _write_budget(settings, state)
    if level < before:
        return None
    share = state.projection / state.usd
    return (f"budget: this month is projected at ${state.projection:,.2f}, {share:.0%} of your "
            f"${state.usd:,.2f} budget (passed {level:.0%}); see `cloudsh cost`")


#: How old a remembered projection may be before a command refreshes it for the warning.
PROJECTION_MAX_AGE_S = 300.0


async def check_budget(backend: Backend, front: str) -> str | None:
    """`budget_warning`, after refreshing a stale projection (only when a budget is set)."""
    state = read_budget(backend.settings)
    if not state.usd:
        return None
    if state.projection is None or datetime.now(UTC).timestamp() - state.projected_at > PROJECTION_MAX_AGE_S:
        await cost_report(backend)
    return budget_warning(backend.settings, front)


# -- price before you pay -------------------------------------------------------------

Ask = Callable[[str], Awaitable[bool]]


async def price_gate(
    backend: Backend, instance_type: str, *, spot: bool, az: str = "", yes: bool, ask: Ask | None, verb: str,
    limit: float | None = None, go_on: str = "pass --yes to confirm (the threshold is the setting confirm_above_per_hour)",
) -> str:
    """Before `verb` (launch, resize) creates anything: the $/h of `instance_type` (a spot
    box at its AZ's price, the region's lowest when the AZ is not chosen yet) as one line.
    Above `limit` (default: the `confirm_above_per_hour` setting) it asks; with no one to
    ask and no `yes` it refuses, saying `go_on` (how this front end goes ahead).

    Raises:
        ConfirmationRefused: over the threshold, no terminal and no `--yes`.
        Declined: the person said no.
    """
    market = "spot" if spot else "on-demand"
    found = await backend.pricing.prices([instance_type], strict=False, spot_for=[instance_type] if spot else [])
    price = found.get(instance_type)
    usd, note = box_hourly(price, market, az)
    if spot and not az and price is not None and price.spot is not None:
        note = f"the cheapest AZ's, {price.spot_az}"  # no AZ chosen yet
    if usd is None:
        return f"{instance_type} {market}: price unknown ({found.why(instance_type) or 'no price listed'})"
    line = f"{instance_type} {market}: ${usd:.4g}/h, about ${usd * HOURS_PER_MONTH:,.0f} a month running"
    line += f" ({note})" if note else ""
    limit = backend.settings.confirm_above_per_hour if limit is None else limit
    if usd <= limit or yes:
        return line
    if ask is None:
        raise ConfirmationRefused(
            f"refusing to {verb} a ${usd:.4g}/h {instance_type} (above your ${limit:g}/h threshold) without confirmation",
            go_on,
        )
    if not await ask(f"{line}: above your ${limit:g}/h threshold. {verb.capitalize()} it?"):
        raise Declined(f"did not {verb} {instance_type}", "nothing was created or changed")
    return line

