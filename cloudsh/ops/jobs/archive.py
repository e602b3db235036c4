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
import shlex

from cloudsh.errors import InvalidState
from cloudsh.models import (
    JOB_TAG_PREFIX,
    JOB_TAGS_KEPT,
    JOB_TAGS_MAX,
    HostInfo,
    Instance,
    job_tags,
)
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.jobs.box import box_status, call_agent, remember_records
from cloudsh.ops.jobs.state import derive_state, merge
from cloudsh.services.backend import Backend

FINISHED = ("finished", "stopped", "lost")


async def make_room(backend: Backend, inst: Instance, host: HostInfo, *, progress: Progress = quiet) -> None:
    """Leave room for one more job tag on `inst`, moving old finished jobs to the box's
    record file; refuses when too many jobs are still running to make room."""
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
    # The newest few finished stay tagged, unless running jobs leave no room for that.
    keep = JOB_TAGS_KEPT if len(tags) - len(done[JOB_TAGS_KEPT:]) < JOB_TAGS_MAX else 0
    moving = {jid: tag.encode() for _, jid, tag in done[keep:]}
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
