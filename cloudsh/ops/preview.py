"""What terminating a box would destroy: disks (and which have no backup at all), results
not yet home, files still being written, instance store. Asked before the confirmation,
changes nothing; `bring_home` runs first and pulls home every result it can.

A box that is not running is previewed without starting it: its disks from EC2, and its
jobs from their tags and from what this machine's last copy home of each left behind
(`jobs.box.results_home`); what only the box itself could tell is said to be unchecked.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudsh.errors import CloudshError
from cloudsh.models import Image, Instance, JobTag, Snapshot, Volume
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.images import TAG_SOURCE
from cloudsh.ops.jobs import record_states, results_not_home, sync_all
from cloudsh.ops.jobs.box import JOBS_DIR, call_agent, job_records, local_records, results_home
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
    #: files, jobs without --sync, jobs of a stopped box whose results may not be home.
    stays: tuple[str, ...] = ()

    def lost(self) -> list[str]:
        """One line per thing that cannot come home (said on stderr under --yes, where any
        of them refuses without a terminal)."""
        out = [f"results not yet home: {r}" for r in self.results_not_home] + list(self.stays)
        return [f"{self.instance.label}: {line}" for line in out]

    def notes(self) -> list[str]:
        """What else is lost or unknown (said on stderr under --yes too, never a refusal):
        what could not be checked, the disks deleted and which of them have no backup."""
        return [f"{self.instance.label}: {line}" for line in self._unchecked() + self._deletes() + self._backups()]

    def _unchecked(self) -> list[str]:
        state = self.instance.state
        return [] if state == "running" else [f"could not check open files or unsynced files on the box: it is {state}"]

    def _deletes(self) -> list[str]:
        if not self.deleted_volumes:
            return []
        them = "them" if len(self.deleted_volumes) > 1 else "it"
        return ["deletes " + ", ".join(self.deleted_volumes) + f" and everything on {them}"]

    def _backups(self) -> list[str]:
        return [_backup_note(disk, when) for disk, when in self.disk_backups]

    def describe(self) -> str:
        """The box on one line, then one indented line per thing lost or kept."""
        head = f"{self.instance.label} ({self.instance.id}, {self.instance.type}, {self.instance.state})"
        parts: list[str] = [looks_like(self.instance)] if not self.instance.managed else []
        parts += self._deletes()
        if self.kept_volumes:
            parts.append("keeps " + ", ".join(self.kept_volumes))
        if self.instance.spot_request_id:
            parts.append(f"cancels spot request {self.instance.spot_request_id}")
        if self.results_not_home:
            parts.append("results not yet home: " + ", ".join(self.results_not_home))
        parts += list(self.stays) + self._unchecked()
        if self.instance_store_gb:
            parts.append(f"wipes {self.instance_store_gb} GB of instance-store (local NVMe) data")
        parts += self._backups()
        return head + "".join(f"\n  - {p}" for p in parts)


def _backup_note(disk: str, when: datetime | None) -> str:
    if when is None:
        return f"no image or snapshot of {disk} exists"
    return f"latest image/snapshot of {disk}: {_ago(when.timestamp())} ago"


def _ago(at: float) -> str:
    secs = datetime.now(UTC).timestamp() - at
    return f"{secs / 86400:.0f} days" if secs >= 86400 else f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.0f} min"


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
        # Jobs that ended are recorded first: a copy after that brought all they wrote.
        with contextlib.suppress(CloudshError):
            await record_states(backend, only=ids, ended_only=True)
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
        gone = sorted((v for v in mine if v.id in dies), key=lambda v: (v.id != inst.root_volume, v.name or v.id))
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
        return (), tuple([line for j in synced if (line := _maybe_not_home(backend, j, jobs[j]))] + unsynced)
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


def _maybe_not_home(backend: Backend, job_id: str, tag: JobTag) -> str:
    """For a box that cannot be asked: a line if the job's results may not all be home."""
    home, at = results_home(backend, job_id, tag)
    if home:
        return ""
    last = f"last copied here {_ago(at)} ago" if at else "never copied here"
    return (f"job {job_id}: results may not all be home, they stay on the box in {tag.remote_dir} "
            f"({last}; start it and run `cloudsh sync {job_id}` to bring them)")


def _under(path: str, remote_dir: str, home: str) -> bool:
    """Whether `path` (home written as ~) lies under the job's sync dir (as given or absolute)."""
    base = remote_dir.rstrip("/")
    base = "~" + base[len(home):] if base.startswith(home + "/") else base
    base = base if base.startswith(("~", "/")) else "~/" + base
    return path.startswith(base + "/")
