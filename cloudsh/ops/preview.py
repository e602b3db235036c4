"""What terminating a box would destroy: disks (and which have no backup at all), results
not yet home, files still being written, instance store. Asked before the confirmation,
changes nothing; `bring_home` runs first and pulls home every result it can.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudsh.errors import CloudshError
from cloudsh.models import Image, Instance, JobTag, Snapshot, Volume
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.images import TAG_SOURCE
from cloudsh.ops.jobs import results_not_home, sync_all
from cloudsh.ops.jobs.box import JOBS_DIR, call_agent, job_records, local_records
from cloudsh.ops.owners import looks_like
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

#: Open files named one by one; past this, "and N more".
OPEN_SHOWN = 5


@dataclass(frozen=True)
class Loss:
    """What terminating a box destroys, for the confirmation question."""

    instance: Instance
    deleted_volumes: tuple[str, ...]
    kept_volumes: tuple[str, ...]
    #: "job (N files)" for each job whose results on the box are not all home yet.
    results_not_home: tuple[str, ...] = ()
    instance_store_gb: int = 0
    #: Each disk that dies with the box: (its name, when its newest image or snapshot was made, or None).
    disk_backups: tuple[tuple[str, datetime | None], ...] = ()
    #: What cannot come home, one line each: running jobs and what they write, open
    #: files, jobs without --sync, checks a stopped box cannot answer.
    stays: tuple[str, ...] = ()

    def lost(self) -> list[str]:
        """One line per thing that cannot come home (said on stderr under --yes)."""
        out = [f"results not yet home: {r}" for r in self.results_not_home] + list(self.stays)
        return [f"{self.instance.label}: {line}" for line in out]

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
        parts += self.stays
        if self.instance_store_gb:
            parts.append(f"wipes {self.instance_store_gb} GB of instance-store (local NVMe) data")
        parts += [_backup_note(disk, when) for disk, when in self.disk_backups]
        return head + "".join(f"\n  - {p}" for p in parts)


def _backup_note(disk: str, when: datetime | None) -> str:
    if when is None:
        return f"no image or snapshot of {disk} exists"
    secs = (datetime.now(UTC) - when).total_seconds()
    ago = f"{secs / 86400:.0f} days" if secs >= 86400 else f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.0f} min"
    return f"latest image/snapshot of {disk}: {ago} ago"


def _disk_backup(vol: Volume, inst: Instance, images: Sequence[Image], snaps: Sequence[Snapshot]) -> datetime | None:
    """When the newest backup of this one disk was made: a snapshot of it (an image's
    snapshots count by the volume they copied); an image of the box covers its root disk."""
    times = [s.started for s in snaps if s.started and s.volume_id == vol.id]
    if vol.id == inst.root_volume:
        times += [i.created for i in images if i.created and i.tags.get(TAG_SOURCE) == inst.id]
    return max(times) if times else None


async def bring_home(backend: Backend, insts: Sequence[Instance], *, progress: Progress = quiet) -> None:
    """Pull home every result the running boxes among `insts` can give now (what fails is
    said through `progress`, and the preview lists what is still not home)."""
    ids = [i.id for i in insts if i.state == "running" and any(t.remote_dir for t in _jobs(backend, i).values())]
    if ids:
        progress("pulling results home first")
        try:
            await sync_all(backend, progress=progress, only=ids)
        except CloudshError as exc:
            progress(f"results not pulled: {exc}")


def _jobs(backend: Backend, inst: Instance) -> dict[str, JobTag]:
    return job_records(inst, local_records(backend))


async def terminate_preview(backend: Backend, insts: Sequence[Instance]) -> list[Loss]:
    vols = {v.id: v for v in await backend.ec2.volumes()}
    types, images, snaps = await asyncio.gather(
        backend.ec2.instance_types({i.type for i in insts}), backend.ec2.images(), backend.ec2.snapshots()
    )
    out = []
    for inst in insts:
        mine = [v for v in vols.values() if v.attached_to == inst.id]
        # DescribeInstances knows which disks die with the box (DescribeVolumes may not say).
        dies = set(inst.deleted_on_termination) | {v.id for v in mine if v.delete_on_termination}
        gone = [v for v in mine if v.id in dies]
        kept = tuple(f"{v.name or v.id} ({v.size_gb} GB)" for v in mine if v.id not in dies)
        backups = tuple(
            (("root disk " if v.id == inst.root_volume else "data volume ") + (v.name or v.id),
             _disk_backup(v, inst, images, snaps))
            for v in gone
        )
        pending, stays = await _on_box(backend, inst)
        out.append(
            Loss(
                inst, tuple(f"{v.name or v.id} ({v.size_gb} GB)" for v in gone), kept, pending,
                instance_store_gb=types[inst.type].instance_storage_gb if inst.type in types else 0,
                disk_backups=backups, stays=stays,
            )
        )
    return out


async def _on_box(backend: Backend, inst: Instance) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(jobs with results still only on the box, what else cannot come home)."""
    jobs = _jobs(backend, inst)
    if not jobs:
        return (), ()
    synced = sorted(j for j, t in jobs.items() if t.remote_dir)
    unsynced = [
        f"job {j} has no --sync: its output stays on the box (log ~/{JOBS_DIR}/{j}/log, files it wrote under ~)"
        for j, t in sorted(jobs.items()) if not t.remote_dir
    ]
    if inst.state != "running":
        where = ", ".join(f"{j} ({jobs[j].remote_dir})" for j in synced)
        unchecked = [f"could not check: the box is {inst.state}: results of {where} may not all be home "
                     f"(start it and run `cloudsh sync` to bring them home)"] if synced else []
        return (), tuple(unchecked + unsynced)
    try:
        pending = await results_not_home(backend, inst)
        host = await ssh_host(backend, inst)
        status, open_files = await asyncio.gather(
            call_agent(backend, host, "status"), call_agent(backend, host, f"open {shlex.quote('~')}")
        )
    except CloudshError as exc:
        return ("unknown (the box does not answer)",), (f"could not check: {exc.message}", *unsynced)
    home = "/root" if host.user == "root" else f"/home/{host.user}"  # as cloud images make it
    short = [("~" + p[len(home):]) if p.startswith(home + "/") else p for p in map(str, open_files or ())]
    lines = []
    running = sorted(j for j, s in (status or {}).items() if isinstance(s, dict) and s.get("state") == "running")
    for j in running:
        writing = [p for p in short if p.startswith(f"~/{JOBS_DIR}/{j}/")
                   or (jobs.get(j) and jobs[j].remote_dir and _under(p, jobs[j].remote_dir, home))]
        lines.append(f"job {j} is running, writing " + (", ".join(writing) or "nothing open yet"))
    others = [p for p in short if not any(p in line for line in lines)]
    if others:
        more = f" and {len(others) - OPEN_SHOWN} more" if len(others) > OPEN_SHOWN else ""
        lines.append("open for writing: " + ", ".join(others[:OPEN_SHOWN]) + more)
    counted = tuple(f"{job} ({n} file{'s' if n != 1 else ''})" for job, n in sorted(pending.items()) if n)
    return counted, tuple(lines + unsynced)


def _under(path: str, remote_dir: str, home: str) -> bool:
    """Whether `path` (home written as ~) lies under the job's sync dir (as given or absolute)."""
    base = remote_dir.rstrip("/")
    base = "~" + base[len(home):] if base.startswith(home + "/") else base
    base = base if base.startswith(("~", "/")) else "~/" + base
    return path.startswith(base + "/")
