"""Records every front end shows, and the plain text table they print as.

Pure functions over `models` objects: the command language prints them, the Python API
returns them, the app fills its panes from them, so a field means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cloudsh.models import Instance, InstanceType, Price, Prices, box_hourly, job_tags


def instance_record(
    inst: Instance,
    types: Mapping[str, InstanceType],
    prices: Mapping[str, Price],
    now: datetime | None = None,
    ssh_port: int | None = None,
) -> dict[str, Any]:
    """The JSON object of `ls --json` (CONTRACT.md fields first); `ssh_port` is where the
    box's SSH server answers on `public_ip` (22 on EC2; a box of the sandbox may differ)."""
    t = types.get(inst.type)
    # What the box costs per hour while running (a stopped box pays only for storage;
    # `burn_rate` counts running boxes only): a spot box pays its own AZ's spot price.
    per_hour, price_note = box_hourly(prices.get(inst.type), inst.market, inst.az)
    uptime = inst.uptime_s(now)
    return {
        "name": inst.name,
        "id": inst.id,
        "type": inst.type,
        "state": inst.state,
        # The state as a person reads it: EC2's, or why an interrupted spot box waits.
        "status": inst.status(now),
        "interrupted": inst.interrupted,
        "market": inst.market,
        "public_ip": inst.public_ip,
        "gpus": t.gpus if t else "",
        "price_per_hour": round(per_hour, 6) if per_hour is not None else None,
        # Why price_per_hour is a stand-in (another AZ's spot price) or missing; "" if neither.
        "price_note": price_note or _why_missing(prices, inst.type, per_hour),
        "az": inst.az,
        "launch_time": inst.launch_time.isoformat() if inst.launch_time else None,
        "uptime_s": round(uptime) if uptime is not None else None,
        "cost_so_far": round(per_hour * uptime / 3600, 4) if per_hour is not None and uptime is not None else None,
        "image_id": inst.image_id,
        # `ubuntu-24.04`, `dlami-nvidia` (has the NVIDIA driver), `ubuntu-24.04+nvidia`; "" unknown.
        "image_family": inst.image_family,
        # False when a GPU type's box has no NVIDIA driver (`nvidia-smi` is missing there).
        "gpu_driver": inst.has_nvidia_driver if t and t.nvidia else None,
        "spot_request_id": inst.spot_request_id,
        # Ids of the jobs its tags hold: completion offers them with no listing of its own.
        "jobs": sorted(job_tags(inst)),
        # False for a box cloudsh did not launch (a colleague's, on a shared account).
        "managed": inst.managed,
        "owner": inst.owner,
        "ssh_port": ssh_port,
    }


def _why_missing(prices: Mapping[str, Price], instance_type: str, per_hour: float | None) -> str:
    # A `Prices` answer knows why; a plain mapping (tests, old callers) does not.
    return prices.why(instance_type) if per_hour is None and isinstance(prices, Prices) else ""


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned text table."""
    cells = [[h for _, h in columns]] + [[str(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)
