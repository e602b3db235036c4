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


def box_sections(rec: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """`show`'s record as text: (section title, lines), the first section untitled. The
    CLI prints it, the app's box view shows the same."""
    from cloudsh.models import JOB_TAG_PREFIX

    name = rec["name"] or rec["id"]
    kind = f"{rec['vcpus']} vCPU, {rec['memory_gib']:g} GiB" if rec.get("vcpus") else ""
    if rec["gpus"]:
        driver = {True: "NVIDIA driver installed", False: "no NVIDIA driver", None: "NVIDIA driver unknown"}
        kind += f", {rec['gpus']} ({driver[rec.get('gpu_driver')]})"
    state = rec.get("status") or rec["state"]
    if rec.get("uptime_s") is not None:
        state += f" · up {duration(rec['uptime_s'])}"
    price = money(rec["price_per_hour"])
    if rec["market"] == "spot" and rec["price_per_hour"] is not None:
        price += f" ({rec['az']}'s spot price)"
    if rec["state"] != "running" and rec["price_per_hour"] is not None:
        price += " while running"
    if rec.get("price_note"):
        price += f" · {rec['price_note']}"
    cost = f"{money(rec['cost_so_far'], '')} so far" if rec.get("cost_so_far") is not None else "nothing now (not running)"
    if rec.get("launch_time") and rec.get("cost_so_far") is not None:
        cost += f" since launch at {rec['launch_time'][:16].replace('T', ' ')} UTC"
    extra = [f"public IPv4 {money(rec['ipv4_per_hour'])}"] if rec.get("ipv4_per_hour") else []
    extra.append(f"disks {money(rec.get('storage_per_month'), '/month')}")
    image = rec["image"]
    address = rec["public_ip"] or "no public address"
    if rec.get("private_ip"):
        address += f" (private {rec['private_ip']})"
    if rec.get("ssh_port"):
        address += f" · SSH port {rec['ssh_port']}"
    head = [
        ("box", f"{name} ({rec['id']})" + ("" if rec.get("managed", True) else f", not launched by cloudsh: {rec.get('owner') or '?'}'s")),
        ("type", f"{rec['type']}: {kind}" if kind else rec["type"]),
        ("state", state),
        ("why", rec.get("why") or ""),
        ("market", f"{rec['market']} at {price}"),
        ("cost", f"{cost} · " + " + ".join(extra)),
        ("az", rec["az"] or "-"),
        ("image", "  ".join(x for x in (image["id"], image.get("name") or "", f"({image['family']})" if image.get("family") else "") if x)),
        ("address", address),
        ("connect", rec["connect"]),
        ("ssh", rec.get("ssh_command") or ("(once it runs)" if rec["state"] != "running" else "(use connect)")),
    ]
    sections = [("", [f"{k:<8} {v}" for k, v in head if v])]
    sections.append(("Volumes", [
        f"{v['id']}  {v['name'] or '-'}  {v['size_gb']} GB {v['type']}  {v['device'] or '-'}  "
        + (f"on {v['mount']}" if v["mount"] else "not mounted")
        + ("" if v.get("mount_reported", True) or not v["mount"] else " (where cloudsh last mounted it)")
        + ("  (root)" if v["root"] else "")
        + ("  deleted with the box" if v["delete_on_termination"] else "")
        for v in rec["volumes"]
    ] or ["none attached"]))
    sections.append(("SSH (port 22) allowed from", [
        f"{r['cidr']:<18} {r['group_id']}  {r['description'] or '-'}" + ("  [cloudsh]" if r["cloudsh"] else "")
        for r in rec["ssh_rules"]
    ] or ["nowhere (no rule lets port 22 in)"]))
    sections.append(("Jobs", [
        f"{j['id']}  {j['state']}  {j['script']}" + (f"  results in {j['local_dir']}" if j.get("local_dir") else "")
        for j in rec["jobs"]
    ] or ["none"]))
    if rec.get("idle"):
        sections.append(("Idle stop", list(rec["idle"]["text"])))
    if rec.get("tunnels") is not None:
        sections.append(("Tunnels", [f"{t['url']} -> :{t['remote_port']}  {t.get('status', '')}".rstrip()
                                     for t in rec["tunnels"]] or ["none open from here"]))
    tags = [f"{k}={v}" for k, v in rec["tags"].items() if not k.startswith(JOB_TAG_PREFIX)]
    sections.append(("Tags", tags or ["none"]))
    if rec.get("notes"):
        sections.append(("Not known", list(rec["notes"])))
    return sections
