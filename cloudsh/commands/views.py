"""Pure functions that turn records into rows, JSON and text tables.

Shared by every front end: the CLI prints `table(...)`, the TUI fills its panes from
the same rows, so a column means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# Re-exported: the commands and the app format with them as before.
from cloudsh.ops.records import instance_record as instance_record
from cloudsh.ops.records import table as table


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


def burn_rate(records: Sequence[Mapping[str, Any]]) -> float:
    """$/h of everything running now."""
    return sum(r["price_per_hour"] or 0.0 for r in records if r["state"] in ("running", "pending"))


INSTANCE_COLUMNS = (
    ("name", "NAME"),
    ("id", "ID"),
    ("type", "TYPE"),
    ("gpus", "GPUS"),
    ("image", "IMAGE"),
    ("state", "STATE"),
    ("market", "MARKET"),
    ("price", "$/H"),
    ("uptime", "UPTIME"),
    ("public_ip", "PUBLIC IP"),
)


#: The column `ls` adds when some box was not launched by cloudsh.
OWNER_COLUMN = ("owner", "OWNER")
#: Marks the name of a box cloudsh did not launch, in every listing.
FOREIGN_MARK = "*"
FOREIGN_NOTE = (
    f"{FOREIGN_MARK} not launched by cloudsh (OWNER: whose it looks like): commands naming several "
    "boxes leave it alone; stop, resize or terminate it by its id"
)


def foreign(rec: Mapping[str, Any]) -> bool:
    return rec.get("managed") is False


def instance_row(rec: Mapping[str, Any]) -> dict[str, str]:
    mark = FOREIGN_MARK if foreign(rec) else ""
    return {
        "name": (rec["name"] or "-") + mark,
        "owner": (rec.get("owner") or "?") if mark else "-",
        "id": rec["id"],
        "type": rec["type"],
        "gpus": rec["gpus"] or "-",
        "image": rec.get("image_family") or "-",
        "state": rec.get("status") or rec["state"],
        "market": rec["market"],
        "price": money(rec["price_per_hour"], ""),
        "uptime": duration(rec["uptime_s"]),
        "public_ip": rec["public_ip"] or "-",
    }


def age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "never"
    return duration(((now or datetime.now(UTC)) - when).total_seconds()) + " ago"
