"""Pure functions that turn records into rows, JSON and text tables.

Shared by every front end: the CLI prints `table(...)`, the TUI fills its panes from
the same rows, so a column means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cloudsh.models import Instance, InstanceType, Price, hourly_cost, job_tags


def money(value: float | None, unit: str = "/h") -> str:
    if value is None:
        return "-"
    if value < 0.1:
        return f"${value:.4f}{unit}"
    return f"${value:.3f}{unit}" if value < 10 else f"${value:,.2f}{unit}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def instance_record(
    inst: Instance, types: Mapping[str, InstanceType], prices: Mapping[str, Price], now: datetime | None = None
) -> dict[str, Any]:
    """The JSON object of `ls --json` (CONTRACT.md fields first)."""
    t = types.get(inst.type)
    # What the box costs per hour while running (a stopped box pays only for storage;
    # `burn_rate` counts running boxes only).
    per_hour = hourly_cost(prices.get(inst.type), inst.market)
    uptime = inst.uptime_s(now)
    return {
        "name": inst.name,
        "id": inst.id,
        "type": inst.type,
        "state": inst.state,
        "market": inst.market,
        "public_ip": inst.public_ip,
        "gpus": t.gpus if t else "",
        "price_per_hour": round(per_hour, 6) if per_hour is not None else None,
        "az": inst.az,
        "launch_time": inst.launch_time.isoformat() if inst.launch_time else None,
        "uptime_s": round(uptime) if uptime is not None else None,
        "cost_so_far": round(per_hour * uptime / 3600, 4) if per_hour is not None and uptime is not None else None,
        "image_id": inst.image_id,
        "spot_request_id": inst.spot_request_id,
        # Ids of the jobs its tags hold: completion offers them with no listing of its own.
        "jobs": sorted(job_tags(inst)),
    }


def burn_rate(records: Sequence[Mapping[str, Any]]) -> float:
    """$/h of everything running now."""
    return sum(r["price_per_hour"] or 0.0 for r in records if r["state"] in ("running", "pending"))


INSTANCE_COLUMNS = (
    ("name", "NAME"),
    ("id", "ID"),
    ("type", "TYPE"),
    ("gpus", "GPUS"),
    ("state", "STATE"),
    ("market", "MARKET"),
    ("price", "$/H"),
    ("uptime", "UPTIME"),
    ("public_ip", "PUBLIC IP"),
)


def instance_row(rec: Mapping[str, Any]) -> dict[str, str]:
    return {
        "name": rec["name"] or "-",
        "id": rec["id"],
        "type": rec["type"],
        "gpus": rec["gpus"] or "-",
        "state": rec["state"],
        "market": rec["market"],
        "price": money(rec["price_per_hour"], ""),
        "uptime": duration(rec["uptime_s"]),
        "public_ip": rec["public_ip"] or "-",
    }


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned text table."""
    cells = [[h for _, h in columns]] + [[str(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    return duration(((now or datetime.now(UTC)) - when).total_seconds()) + " ago"
