"""Job records that fit EC2's tag limits: at most `JOB_TAGS_MAX` job tags on a box.

Before a job starts on a box that has that many, its finished jobs (finished, stopped or
lost) beyond the newest `JOB_TAGS_KEPT` move to a record file on the box
(`~/.cloudsh/jobs/records.json`, written by the agent) and leave the tags. The box's
agent reports each moved job with its record (`status`), and this machine keeps a copy
(`jobs-archive.json` in the state dir) for when the box does not answer, so `jobs`
lists them all.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

from cloudsh.errors import InvalidState
from cloudsh.models import (
    JOB_TAG_PREFIX,
    JOB_TAGS_KEPT,
    JOB_TAGS_MAX,
    HostInfo,
    Instance,
    JobTag,
    job_tags,
)
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.jobs.box import box_status, call_agent
from cloudsh.services.backend import Backend

FINISHED = ("finished", "stopped", "lost")


def _index(backend: Backend) -> Any:
    return backend.settings.state_dir / "jobs-archive.json"


def local_records(backend: Backend) -> dict[str, dict[str, JobTag]]:
    """Per box id, the job records moved off its tags (this machine's copy)."""
    try:
        raw = json.loads(_index(backend).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[str, JobTag]] = {}
    for inst_id, records in dict(raw).items():
        decoded = {jid: tag for jid, text in dict(records).items() if (tag := JobTag.decode(text))}
        out[str(inst_id)] = decoded
    return out


def remember_records(backend: Backend, inst_id: str, records: dict[str, str]) -> None:
    path = _index(backend)
    try:
        index = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        index = {}
    index.setdefault(inst_id, {}).update(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)


async def make_room(backend: Backend, inst: Instance, host: HostInfo, *, progress: Progress = quiet) -> None:
    """Leave room for one more job tag on `inst`, moving old finished jobs to the box's
    record file; refuses when too many jobs are still running to make room."""
    from cloudsh.ops.jobs.state import derive_state, merge

    tags = job_tags(inst)
    if len(tags) < JOB_TAGS_MAX:
        return
    box = await box_status(backend, host)
    done = []
    for jid, tag in tags.items():
        answer = box.get(jid, {"state": "missing"})
        current = merge(tag, derive_state(tag, inst, answer), answer)
        if current.state in FINISHED:
            done.append((current.started or 0.0, jid, current))
    done.sort(reverse=True)
    moving = {jid: tag.encode() for _, jid, tag in done[JOB_TAGS_KEPT:]}
    if len(tags) - len(moving) >= JOB_TAGS_MAX:
        raise InvalidState(
            f"{inst.label} already has {len(tags)} jobs that have not finished",
            "wait for one to finish (`cloudsh jobs`), or stop one with `cloudsh job stop JOB`",
        )
    progress(f"moving {len(moving)} finished job record(s) from {inst.label}'s tags to its record file")
    await call_agent(backend, host, f"archive {shlex.quote(json.dumps(moving))}")
    remember_records(backend, inst.id, moving)
    await backend.ec2.call(
        "delete_tags", Resources=[inst.id], Tags=[{"Key": JOB_TAG_PREFIX + jid} for jid in moving]
    )
