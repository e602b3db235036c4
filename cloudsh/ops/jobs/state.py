"""A job's state: derived from what its box and EC2 say, listed, and recorded in tags.

Listing (`list_jobs`, `get_job`) is a pure read: it asks each running box with jobs for
their live state and shows it, but writes nothing, so any number of machines may list
at once. Writing what a box said back into its EC2 tags (`record_states`) is a separate
step, taken where a job's state changes hands: a job stopped, resumed or followed to its
end, a box about to stop or be terminated. The tags are what is known once the box no
longer answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudsh.errors import CloudshError, NotFound
from cloudsh.models import JOB_TAG_PREFIX, Instance, Job, JobTag, hourly_cost, job_tags
from cloudsh.ops.jobs.box import box_status, find_job, full_id, local_dir_of, local_records
from cloudsh.ops.owners import own
from cloudsh.ops.reach import allow_this_machine
from cloudsh.services.backend import Backend

#: Job states that may still write results: running, or resumed at the box's next boot.
LIVE_JOB_STATES = frozenset({"starting", "running", "interrupted"})
#: What a box answered for one job (`agents.jobs.status`); None when it was not asked.
BoxState = dict[str, Any] | None


def derive_state(tag: JobTag, inst: Instance, box: BoxState) -> str:
    """The job's state from what the box says (when reachable) and what EC2 says."""
    if inst.state in ("terminated", "shutting-down"):
        return tag.state if tag.state in ("finished", "stopped") else "lost"
    just_tagged = tag.state == "starting" and time.time() - (tag.started or 0) < 60
    if box is not None and just_tagged and box.get("state") in ("lost", "missing"):
        return "starting"  # seen between the tag and the supervisor's first write
    if box is not None and box.get("state") not in (None, "missing"):
        return str(box["state"])
    if box is not None and box.get("state") == "missing":
        return "lost"
    if inst.state != "running" and tag.state in ("running", "starting"):
        return "interrupted"  # the box stopped under it; its disk and state are kept
    return tag.state


def merge(tag: JobTag, state: str, box: BoxState) -> JobTag:
    """The tag updated with the derived state and the box's times and exit status."""
    new = replace(tag, state=state)
    if box:
        new = replace(
            new,
            script=str(box.get("script") or tag.script),  # whole: a tag may hold it shortened
            started=box.get("started") or tag.started,
            ended=box.get("ended") or (box.get("noticed") if state == "interrupted" else None) or tag.ended,
            exit_status=box.get("exit") if box.get("exit") is not None else tag.exit_status,
            runs=int(box.get("runs") or tag.runs),
            before_s=float(box.get("before_s") or tag.before_s),
        )
    return new


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def job_record(job_id: str, inst: Instance, tag: JobTag, box: BoxState, price: float | None,
               local: Path | None) -> Job:
    """The `Job` shown for a tag (already merged with what the box said)."""
    now = time.time()
    run_s = 0.0
    if tag.started:
        # A box stopped with no notice on it (from the console, or by EC2) ended the job
        # when EC2 says it stopped.
        stopped = inst.state_since.timestamp() if inst.state != "running" and inst.state_since else None
        end = now if tag.state == "running" else (tag.ended or stopped or tag.started)
        run_s = max(0.0, end - tag.started)
    runtime = tag.before_s + run_s
    return Job(
        id=job_id,
        instance_id=inst.id,
        instance_name=inst.label,
        script=tag.script,
        state=tag.state,
        exit_status=tag.exit_status,
        started=_when(tag.started),
        ended=_when(tag.ended),
        runtime_s=runtime,
        runs=tag.runs,
        remote_dir=tag.remote_dir,
        local_dir=str(local) if local else "",
        cost=price * runtime / 3600 if price is not None else None,
        last_lines=tuple((box or {}).get("tail", ())),
    )


@dataclass(frozen=True)
class _Seen:
    """One job as listed: its tag as stored and as it should now read."""

    inst: Instance
    stored: JobTag
    current: JobTag
    job: Job
    #: Its record was moved off the box's tags (`archive.py`): never written back there.
    archived: bool = False


async def _survey(backend: Backend, insts: Sequence[Instance]) -> list[_Seen]:
    """Every job on `insts` (tagged or moved to the box's record file), asking the running
    boxes among them (all at once)."""
    moved_here = local_records(backend)
    with_jobs = [(i, t) for i in insts if (t := job_tags(i)) or moved_here.get(i.id)]
    if not with_jobs:
        return []

    async def ask(inst: Instance) -> dict[str, dict[str, Any]] | None:
        if inst.state != "running":
            return None
        try:
            await allow_this_machine(backend, inst)
            host = backend.hosts.resolve(inst)
            if host is None:
                return None
            await backend.ssh.ensure_pinned(host)
            return await box_status(backend, host)
        except CloudshError:
            return None  # unreachable now: the tag is the best knowledge

    types = sorted({i.type for i, _ in with_jobs})
    spot = sorted({i.type for i, _ in with_jobs if i.market == "spot"})
    answers, prices = await asyncio.gather(
        asyncio.gather(*(ask(i) for i, _ in with_jobs)),
        backend.pricing.prices(types, strict=False, spot_for=spot),
    )
    seen: list[_Seen] = []
    for (inst, tags), answer in zip(with_jobs, answers, strict=True):
        price = hourly_cost(prices.get(inst.type), inst.market, inst.az)
        moved = {**moved_here.get(inst.id, {})}
        for jid, said in (answer or {}).items():
            if (record := JobTag.decode(said.get("record") or "")) is not None:
                moved[jid] = record
        moved = {jid: t for jid, t in moved.items() if jid not in tags}
        for jid, tag in sorted({**moved, **tags}.items(), key=lambda kv: kv[1].started or 0):
            box = answer.get(jid, {"state": "missing"}) if answer is not None else None
            new = merge(tag, derive_state(tag, inst, box), box)
            job = job_record(jid, inst, new, box, price, local_dir_of(backend, jid, new))
            seen.append(_Seen(inst, tag, new, job, archived=jid in moved))
    return seen


async def list_jobs(backend: Backend) -> list[Job]:
    """All jobs on all boxes, with the live state of those on running boxes. Writes nothing."""
    insts = await backend.ec2.list_instances(include_terminated=True)
    return [s.job for s in await _survey(backend, insts)]


async def get_job(backend: Backend, job_id: str) -> Job:
    """One job (by id or unique prefix), asking only its own box. Writes nothing."""
    inst, _ = await find_job(backend, job_id)
    return pick_job([s.job for s in await _survey(backend, [inst])], full_id(inst, job_id), job_id)


async def record_states(backend: Backend, only: Sequence[str] | None = None, *, ended_only: bool = False) -> list[Job]:
    """Write what the boxes say of their jobs into the jobs' tags, where it differs; for
    every box, or the boxes whose ids are in `only`; with `ended_only`, only for jobs that
    will not run again by themselves (not in `LIVE_JOB_STATES`). Returns those boxes' jobs.

    A box whose tags cannot be written keeps its old tags: the next record tries again.
    """
    insts = await backend.ec2.list_instances(include_terminated=True)
    # A sweep writes tags on cloudsh's own boxes only (`ops.owners`).
    insts = own(insts) if only is None else [i for i in insts if i.id in only]
    seen = await _survey(backend, insts)
    changed: dict[str, dict[str, str]] = {}
    for s in seen:
        if ended_only and s.current.state in LIVE_JOB_STATES:
            continue
        if s.current.encode() != s.stored.encode() and s.inst.state != "terminated" and not s.archived:
            changed.setdefault(s.inst.id, {})[JOB_TAG_PREFIX + s.job.id] = s.current.encode()
    for inst_id, tags in changed.items():
        with contextlib.suppress(CloudshError):
            await backend.ec2.set_tags([inst_id], tags)
    return [s.job for s in seen]


def pick_job(jobs: Sequence[Job], full: str, asked: str) -> Job:
    """The job whose whole id is `full` (`asked` is what the user typed, for the error)."""
    for job in jobs:
        if job.id == full:
            return job
    raise NotFound(f"no job {asked!r}", "list jobs with `cloudsh jobs`")


async def record_before_shutdown(backend: Backend, insts: Sequence[Instance]) -> None:
    """Boxes about to stop or be terminated: record their jobs' states while they still
    answer (a job that finished must not read "interrupted" or "lost" afterwards).
    Boxes without jobs cost nothing; one that does not answer keeps its tags."""
    ids = [i.id for i in insts if i.state == "running" and job_tags(i)]
    if ids:
        with contextlib.suppress(CloudshError):
            await record_states(backend, only=ids)


async def running_jobs(backend: Backend, insts: Sequence[Instance]) -> list[Job]:
    """The jobs still running on `insts` as their boxes say (a stop or reboot ends them);
    boxes without jobs cost nothing. Records what the boxes said in the jobs' tags."""
    ids = [i.id for i in insts if i.state == "running" and job_tags(i)]
    if not ids:
        return []
    return [j for j in await record_states(backend, only=ids) if j.state in ("running", "starting")]


async def box_jobs(backend: Backend, inst: Instance) -> list[Job]:
    """The jobs of one box, as `list_jobs` sees them (asking the box if it runs). Writes nothing."""
    return [s.job for s in await _survey(backend, [inst])]
