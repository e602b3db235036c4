"""A job's life: checked before anything is made, started detached, stopped, resumed, read.

Every step that changes a job's state on the box also records it in the box's EC2 tag
(`state.record_states`), so other machines and a later `jobs` see it once the box is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cloudsh.errors import CloudshError, InvalidState, UsageError
from cloudsh.models import JOB_TAG_PREFIX, HostInfo, Instance, Job, JobTag
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.jobs.archive import make_room
from cloudsh.ops.jobs.box import (
    AGENT_PATH,
    JOBS_DIR,
    call_agent,
    find_job,
    full_id,
    home_for,
    install_agent,
    remember_local,
)
from cloudsh.ops.jobs.state import get_job, job_record, pick_job, record_states
from cloudsh.ops.jobs.transfer import OutputCallback, sync_job
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

#: The longest `--sync` remote dir: the job's tag holds it (with the box's home before it).
REMOTE_DIR_MAX = 100


@dataclass(frozen=True)
class ScriptPlan:
    """Every check that can fail before anything is created on the box."""

    script: Path
    remote_dir: str
    local_dir: Path | None
    env: dict[str, str]
    #: A local directory uploaded to the box's home (as `~/<its name>`) before the start.
    workdir: Path | None = None


def plan_script(
    script: str, sync: str | None = None, env: Sequence[str] = (), workdir: str | None = None
) -> ScriptPlan:
    path = Path(script).expanduser()
    if not path.exists():
        raise UsageError(f"{script}: no such file", "check the script's path")
    if not path.is_file():
        raise UsageError(f"{script} is not a file", "give the script to run")
    if not os.access(path, os.X_OK):
        raise UsageError(
            f"{script} is not executable", f"make it so with `chmod +x {script}` (and give it a #! line)"
        )
    with path.open("rb") as head:
        magic = head.read(4)
    # The box runs it with exec(): without `#!` (or a program's ELF header) that fails with 126.
    if not magic.startswith((b"#!", b"\x7fELF")):
        raise UsageError(
            f"{script} has no #! line, so the box cannot run it",
            "make its first line name its interpreter, e.g. #!/usr/bin/env bash or #!/usr/bin/env python3",
        )
    remote, local = "", None
    if sync:
        remote, sep, local_text = sync.partition(":")
        if not remote or (sep and not local_text):
            raise UsageError(f"bad --sync {sync!r}", "use REMOTE_DIR or REMOTE_DIR:LOCAL_DIR, e.g. out:./results")
        if len(remote) > REMOTE_DIR_MAX:  # it goes in the job's EC2 tag (256 characters)
            raise UsageError(
                f"--sync's remote dir is {len(remote)} characters long",
                f"use a shorter one (at most {REMOTE_DIR_MAX}), e.g. a dir under the box's home",
            )
        local = Path(local_text or Path(remote.rstrip("/")).name or "results").expanduser().resolve()
        if local.exists() and not local.is_dir():
            raise UsageError(f"{local} exists and is not a directory", "pick another local dir")
    variables: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise UsageError(f"bad --env {item!r}", "use NAME=VALUE")
        variables[key] = value
    work: Path | None = None
    if workdir:
        work = Path(workdir).expanduser().resolve()
        if not work.is_dir():
            raise UsageError(f"{workdir} is not a directory", "give --workdir a local directory to upload")
        # Relative to the box's home, which is where the script runs.
        variables.setdefault("CLOUDSH_WORKDIR", work.name)
    return ScriptPlan(path, remote, local, variables, work)


def new_job_id(script: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", script.stem).strip("-.")[:24] or "job"
    return f"{stem}-{secrets.token_hex(2)}"


async def start_script(
    backend: Backend, inst: Instance, host: HostInfo, plan: ScriptPlan, *, progress: Progress = quiet
) -> Job:
    """Upload and start the script detached; on any failure nothing is left behind."""
    job_id = new_job_id(plan.script)
    jobdir = f"{JOBS_DIR}/{job_id}"
    local = home_for(backend, job_id, plan.local_dir) if plan.local_dir is not None else None
    if local is not None and local != plan.local_dir:
        progress(f"{plan.local_dir} holds another job's results: this job's go to {local}")
    progress(f"uploading {plan.script.name} to {inst.label}")
    await install_agent(backend, host, job_id)
    await make_room(backend, inst, host, progress=progress)
    tagged = False
    try:
        await backend.ssh.put(host, plan.script, f"{jobdir}/{plan.script.name}", recursive=False)
        if plan.workdir is not None:
            progress(f"uploading {plan.workdir.name}/ to {inst.label}:~/{plan.workdir.name}")
            await backend.ssh.put(host, plan.workdir, plan.workdir.name)
        spec = {"script": plan.script.name, "sync_dir": plan.remote_dir, "env": plan.env}
        tag = JobTag(plan.script.name, "starting", started=time.time(), remote_dir=plan.remote_dir)
        await backend.ec2.set_tags([inst.id], {JOB_TAG_PREFIX + job_id: tag.encode()})
        tagged = True
        answer = await call_agent(backend, host, f"start {job_id} --spec {shlex.quote(json.dumps(spec))}")
        if not answer.get("ok"):
            raise CloudshError(str(answer.get("error", "the job did not start")), str(answer.get("hint", "")))
        state = answer["state"]
        tag = replace(tag, state="running", started=state.get("started"), remote_dir=answer.get("sync_dir", ""))
        await backend.ec2.set_tags([inst.id], {JOB_TAG_PREFIX + job_id: tag.encode()})
    except BaseException:
        with contextlib.suppress(CloudshError):
            await backend.ssh.run(host, f"rm -rf {jobdir}", timeout=15)
        if tagged:
            with contextlib.suppress(CloudshError):
                await backend.ec2.call("delete_tags", Resources=[inst.id], Tags=[{"Key": JOB_TAG_PREFIX + job_id}])
        raise
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        remember_local(backend, job_id, local)
    progress(f"job {job_id} running on {inst.label}")
    return job_record(job_id, inst, tag, state, None, local)


async def stop_job(backend: Backend, job_id: str, *, wait_s: float = 15.0) -> Job:
    """SIGTERM the job's processes; returns once the box says it is no longer running,
    with that recorded in the job's tag."""
    inst, _ = await find_job(backend, job_id)
    full = full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await install_agent(backend, host)
    await call_agent(backend, host, f"stop {full} --wait {wait_s:g}", timeout=wait_s + 15)
    return pick_job(await record_states(backend, only=[inst.id]), full, job_id)


async def resume_job(backend: Backend, job_id: str, *, progress: Progress = quiet) -> Job:
    """Pull what is not yet home, then run the script again with CLOUDSH_RESUME=1."""
    inst, tag = await find_job(backend, job_id)
    full = full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    job = await get_job(backend, full)
    if job.state in ("running", "starting"):
        raise InvalidState(f"job {full} is still running", f"follow it with `cloudsh logs {full} -f`")
    if job.local_dir:
        progress(f"pulling results of {full} from {inst.label}")
        await sync_job(backend, full, progress=progress)
    await install_agent(backend, host)
    answer = await call_agent(backend, host, f"start {full} --resume")
    if not answer.get("ok"):
        raise CloudshError(str(answer.get("error", "the job did not start")), str(answer.get("hint", "")))
    state = answer["state"]
    new = replace(tag, state="running", started=state.get("started"), ended=None, exit_status=None,
                  runs=int(state.get("runs", tag.runs + 1)), before_s=float(state.get("before_s", 0.0)))
    await backend.ec2.set_tags([inst.id], {JOB_TAG_PREFIX + full: new.encode()})
    progress(f"job {full} resumed on {inst.label} (run {new.runs})")
    return job_record(full, inst, new, state, None, Path(job.local_dir) if job.local_dir else None)


async def logs(backend: Backend, job_id: str, *, follow: bool, on_output: OutputCallback) -> None:
    inst, _ = await find_job(backend, job_id)
    full = full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await install_agent(backend, host)
    await backend.ssh.run(host, f"python3 {AGENT_PATH} logs {full}" + (" --follow" if follow else ""), on_stdout=on_output)
