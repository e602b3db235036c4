"""What terminating a box would destroy: disks, results not yet home, instance store,
and how old its newest backup is. Asked before the confirmation, changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudsh.errors import CloudshError
from cloudsh.models import Instance, job_tags
from cloudsh.ops.images import latest_backups
from cloudsh.ops.jobs import results_not_home
from cloudsh.ops.owners import looks_like
from cloudsh.services.backend import Backend


@dataclass(frozen=True)
class Loss:
    """What terminating a box destroys, for the confirmation question."""

    instance: Instance
    deleted_volumes: tuple[str, ...]
    kept_volumes: tuple[str, ...]
    #: "job (N files)" for each job whose results on the box are not all home yet.
    results_not_home: tuple[str, ...] = ()
    instance_store_gb: int = 0
    #: When the newest image or snapshot of this box was made; None: never.
    latest_backup: datetime | None = None

    def describe(self) -> str:
        """The box on one line, then one indented line per thing lost or kept."""
        head = f"{self.instance.label} ({self.instance.id}, {self.instance.type}, {self.instance.state})"
        parts: list[str] = [looks_like(self.instance)] if not self.instance.managed else []
        if self.deleted_volumes:
            them = "them" if len(self.deleted_volumes) > 1 else "it"
            parts.append("deletes " + ", ".join(self.deleted_volumes) + f" and everything on {them}")
        if self.kept_volumes:
            parts.append("keeps " + ", ".join(self.kept_volumes))
        if self.instance.spot_request_id:
            parts.append(f"cancels spot request {self.instance.spot_request_id}")
        if self.results_not_home:
            parts.append("results not yet home: " + ", ".join(self.results_not_home))
        if self.instance_store_gb:
            parts.append(f"wipes {self.instance_store_gb} GB of instance-store (local NVMe) data")
        parts.append(_backup_note(self.latest_backup))
        return head + "".join(f"\n  - {p}" for p in parts)


def _backup_note(when: datetime | None) -> str:
    if when is None:
        return "no image or snapshot of it exists"
    secs = (datetime.now(UTC) - when).total_seconds()
    ago = f"{secs / 86400:.0f} days" if secs >= 86400 else f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.0f} min"
    return f"latest image/snapshot of it: {ago} ago"


async def terminate_preview(backend: Backend, insts: Sequence[Instance]) -> list[Loss]:
    vols = {v.id: v for v in await backend.ec2.volumes()}
    types, backups = await asyncio.gather(
        backend.ec2.instance_types({i.type for i in insts}), latest_backups(backend, insts)
    )
    out = []
    for inst in insts:
        mine = [v for v in vols.values() if v.attached_to == inst.id]
        # DescribeInstances knows which disks die with the box (DescribeVolumes may not say).
        dies = set(inst.deleted_on_termination) | {v.id for v in mine if v.delete_on_termination}
        gone = tuple(f"{v.name or v.id} ({v.size_gb} GB)" for v in mine if v.id in dies)
        kept = tuple(f"{v.name or v.id} ({v.size_gb} GB)" for v in mine if v.id not in dies)
        out.append(
            Loss(
                inst, gone, kept, await _results_not_home(backend, inst),
                instance_store_gb=types[inst.type].instance_storage_gb if inst.type in types else 0,
                latest_backup=backups.get(inst.id),
            )
        )
    return out


async def _results_not_home(backend: Backend, inst: Instance) -> tuple[str, ...]:
    """Jobs with results still only on this box (asks the box only if it has such jobs)."""
    if inst.state != "running" or not any(t.remote_dir for t in job_tags(inst).values()):
        return ()
    try:
        pending = await results_not_home(backend, inst)
    except CloudshError:
        return ("unknown (the box does not answer)",)
    return tuple(f"{job} ({n} file{'s' if n != 1 else ''})" for job, n in sorted(pending.items()) if n)
