"""The job agent on a box, finding a job's box, and where this machine keeps its results.

The agent is `cloudsh.agents.jobs`, copied to `~/.cloudsh/jobs/agent.py` before each use
(it is small, and a box launched from an old image may hold an older copy).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from cloudsh import agents
from cloudsh.errors import CloudshError, NotFound, UsageError
from cloudsh.models import HostInfo, Instance, JobTag, job_tags
from cloudsh.services.backend import Backend

JOBS_DIR = ".cloudsh/jobs"  # relative to the login user's home, on the box
AGENT_PATH = f"{JOBS_DIR}/agent.py"


async def call_agent(backend: Backend, host: HostInfo, args: str, *, timeout: float = 30.0) -> Any:
    """Run the box's agent (installed with `install_agent`) and parse its JSON answer."""
    result = await backend.ssh.run(host, f"python3 {AGENT_PATH} {args}", timeout=timeout)
    if result.exit_status == 127 and "agent.py" not in result.stderr:
        raise CloudshError(f"{host.name} has no python3", "install python3 on the box (Ubuntu has it)")
    try:
        return json.loads(result.stdout)
    except ValueError:
        why = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise CloudshError(f"the job agent on {host.name} failed: {why}", "") from None


async def install_agent(backend: Backend, host: HostInfo, job_id: str = "") -> None:
    """Write the agent (through a temporary name) and, with `job_id`, the job's directory."""
    target = f"{JOBS_DIR}/{job_id}" if job_id else JOBS_DIR
    # A temporary name of this shell's own: several front ends may write it at once.
    tmp = f"{JOBS_DIR}/.agent.py.$$"
    cmd = f"mkdir -p {target} && cat > {tmp} && mv {tmp} {AGENT_PATH}"
    result = await backend.ssh.run(host, cmd, stdin=agents.source("jobs"))
    if not result.ok:
        raise CloudshError(
            f"cannot write to ~/{JOBS_DIR} on {host.name}: {result.stderr.strip()}", "check the box's disk"
        )


async def box_status(backend: Backend, host: HostInfo) -> dict[str, dict[str, Any]]:
    """Every job's state as the box sees it (one SSH command for all of them)."""
    await install_agent(backend, host)
    data = await call_agent(backend, host, "status")
    return {str(k): v for k, v in dict(data).items()}


# -- finding a job ------------------------------------------------------------------------


async def find_job(backend: Backend, job_id: str) -> tuple[Instance, JobTag]:
    """The box running `job_id` (or a unique prefix of it) and its tag."""
    insts = await backend.ec2.list_instances(include_terminated=True)
    found = [(i, jid, t) for i in insts for jid, t in job_tags(i).items()]
    exact = [f for f in found if f[1] == job_id]
    matches = exact or [f for f in found if f[1].startswith(job_id)]
    if not matches:
        raise NotFound(f"no job {job_id!r}", "list jobs with `cloudsh jobs`")
    if len(matches) > 1:
        raise UsageError(
            f"job {job_id!r} is ambiguous: {', '.join(sorted(m[1] for m in matches))}",
            "give more of the id",
        )
    inst, _, tag = matches[0]
    return inst, tag


def job_records(inst: Instance, moved: dict[str, dict[str, JobTag]]) -> dict[str, JobTag]:
    """The box's jobs: its tags, and those this machine moved to its record file (`moved`,
    from `local_records`)."""
    return {**moved.get(inst.id, {}), **job_tags(inst)}


def full_id(inst: Instance, job_id: str) -> str:
    """The whole id of the job on `inst` that `job_id` names (as `find_job` matched it)."""
    ids = [j for j in job_tags(inst) if j == job_id] or [j for j in job_tags(inst) if j.startswith(job_id)]
    return ids[0]


# -- where results live on this machine ------------------------------------------------------


def _local_index(backend: Backend) -> Path:
    return backend.settings.state_dir / "jobs.json"


def remember_local(backend: Backend, job_id: str, local: Path) -> None:
    path = _local_index(backend)
    try:
        index = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        index = {}
    index[job_id] = str(local)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, path)


def home_for(backend: Backend, job_id: str, wanted: Path) -> Path:
    """Where a new job's results go: `wanted`, unless another job of this machine already
    uses it (or a folder inside it, or one around it); then `wanted/<job_id>`."""
    with contextlib.suppress(OSError, ValueError):
        index = json.loads(_local_index(backend).read_text())
        for other, folder in index.items():
            used = Path(folder)
            if other != job_id and (used == wanted or wanted in used.parents or used in wanted.parents):
                return wanted / job_id
    return wanted


def local_dir_of(backend: Backend, job_id: str, tag: JobTag) -> Path | None:
    """Where this machine keeps the job's results: as started here, else as the tag says,
    else `./<remote dir name>`."""
    if not tag.remote_dir:
        return None
    with contextlib.suppress(OSError, ValueError):
        index = json.loads(_local_index(backend).read_text())
        if job_id in index:
            return Path(index[job_id])
    if tag.local_dir:
        return Path(tag.local_dir)
    return Path.cwd() / Path(tag.remote_dir).name


# -- job records moved off a box's tags (`archive.py`): this machine's copy ---------------


def _archive_index(backend: Backend) -> Path:
    return backend.settings.state_dir / "jobs-archive.json"


def local_records(backend: Backend) -> dict[str, dict[str, JobTag]]:
    """Per box id, the job records moved off its tags (this machine's copy)."""
    try:
        raw = json.loads(_archive_index(backend).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[str, JobTag]] = {}
    for inst_id, records in dict(raw).items():
        decoded = {jid: tag for jid, text in dict(records).items() if (tag := JobTag.decode(text))}
        out[str(inst_id)] = decoded
    return out


def remember_records(backend: Backend, inst_id: str, records: dict[str, str]) -> None:
    path = _archive_index(backend)
    try:
        index = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        index = {}
    index.setdefault(inst_id, {}).update(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)


# -- what this machine's last copy home of a job left on the box ---------------------------


def _pass_path(backend: Backend, job_id: str) -> Path:
    return backend.settings.state_dir / "sync" / f"{job_id}.last.json"


def remember_pass(backend: Backend, job_id: str, tag: JobTag, pending: int, over: bool) -> None:
    """After a copy home that worked: how many files it left on the box, and whether the
    job's run (known by its start) had ended before the copy began."""
    path = _pass_path(backend, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # a `follow` and a `sync` may both write
    tmp.write_text(json.dumps({"started": tag.started, "over": over, "pending": pending, "at": time.time()}))
    os.replace(tmp, path)


def results_home(backend: Backend, job_id: str, tag: JobTag) -> tuple[bool, float | None]:
    """For a box that cannot be asked: (whether this machine has all the job's results,
    because a copy began after its run ended and left nothing on the box; when the last
    copy home was made, or None)."""
    try:
        last = dict(json.loads(_pass_path(backend, job_id).read_text()))
    except (OSError, ValueError):
        return False, None
    home = last.get("started") == tag.started and bool(last.get("over")) and last.get("pending") == 0
    return home, float(last.get("at") or 0) or None
