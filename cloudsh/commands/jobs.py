"""Long-running scripts: script, jobs, logs, sync, job stop, job resume; and `sandbox interrupt`."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cloudsh.commands.instances import find_all
from cloudsh.commands.registry import Context, arg, command
from cloudsh.commands.views import duration, money, table
from cloudsh.errors import InvalidState, UsageError
from cloudsh.models import HostInfo, Instance, Job, to_jsonable

JOB_COLUMNS = (
    ("id", "JOB"), ("box", "BOX"), ("script", "SCRIPT"), ("state", "STATE"),
    ("runtime", "RUNTIME"), ("cost", "COST"), ("results", "RESULTS"),
)


def _state_text(job: Job) -> str:
    if job.state == "finished":
        return f"finished ({job.exit_status})" if job.exit_status else "finished"
    if job.runs > 1 and job.state == "running":
        return f"running (run {job.runs})"
    return job.state


def _runtime(seconds: float) -> str:
    return f"{int(seconds)}s" if seconds < 60 else duration(seconds)


def _row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "box": job.instance_name,
        "script": job.script,
        "state": _state_text(job),
        "runtime": _runtime(job.runtime_s) if job.started else "-",
        "cost": money(job.cost, ""),
        "results": job.local_dir or "-",
    }


async def _box_for_script(ctx: Context, name: str) -> tuple[Instance, HostInfo]:
    """The box to run on; a stopped one is started if the user agrees."""
    from cloudsh.ops import instances as ops
    from cloudsh.ops.reach import host_for

    [inst] = await find_all(ctx, [name])
    stopped = inst.state in ("stopped", "stopping")
    if stopped and ctx.confirm is not None and await ctx.confirm(f"{inst.label} is {inst.state}. Start it?"):
        [inst] = await ops.start(ctx.backend, [inst], progress=ctx.out.info)
    if inst.state != "running":
        hint = (
            f"start it with `cloudsh start {inst.label}`"
            if inst.state in ("stopped", "stopping") else "check `cloudsh ls --all`"
        )
        raise InvalidState(f"{inst.label} is {inst.state}, not running", hint)
    host = await host_for(ctx.backend, inst)
    await ctx.backend.ssh.ensure_pinned(host)
    return inst, host


def _end_status(ctx: Context, job: Job) -> int:
    if job.state == "finished":
        ctx.out.info(f"job {job.id} finished with exit status {job.exit_status}")
        return job.exit_status or 0
    if job.state == "interrupted":
        ctx.out.info(
            f"job {job.id} was interrupted; when {job.instance_name} runs again: "
            f"`cloudsh job resume {job.id}`"
        )
        return 1
    ctx.out.info(f"job {job.id} is {job.state}")
    return 0 if job.state == "running" else 1


@command(
    "script",
    "Run a script detached on an instance (survives disconnects); results come home with --sync.",
    arg("name", kind="instance"),
    arg("file", kind="path", metavar="FILE"),
    arg("--sync", metavar="REMOTE_DIR[:LOCAL_DIR]", help="copy files the script writes under REMOTE_DIR home (default LOCAL_DIR: ./REMOTE_DIR's name)"),
    arg("--env", "-e", repeat=True, metavar="K=V", help="environment variable for the script; repeatable"),
    arg("--workdir", "-w", kind="path", metavar="DIR", help="upload this local directory to the box's home first (CLOUDSH_WORKDIR names it there)"),
    arg("--follow", "-f", flag=True, help="stream its output and pull results until it ends"),
    epilog=(
        "the script sees CLOUDSH_JOB_ID, CLOUDSH_SYNC_DIR and CLOUDSH_INTERRUPT_FILE (created, with a\n"
        "SIGTERM, when a spot interruption is announced); after `job resume` CLOUDSH_RESUME=1.\n"
        "example: cloudsh script box train.py --sync out:./results --follow"
    ),
)
async def script(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import jobs as ops

    plan = ops.plan_script(a.file, a.sync, a.env or (), a.workdir)
    inst, host = await _box_for_script(ctx, a.name)
    job = await ops.start_script(ctx.backend, inst, host, plan, progress=ctx.out.info)
    ctx.out.print(job.id)
    if job.local_dir:
        ctx.out.info(f"results: {inst.label}:{job.remote_dir} -> {job.local_dir} (a mirror of the box's folder)")
    if not a.follow:
        ctx.out.info(f"follow it with `cloudsh logs {job.id} -f`; pull results with `cloudsh sync {job.id}`")
        return 0
    job = await ops.follow(ctx.backend, job.id, on_output=ctx.out.write, progress=ctx.out.info)
    return _end_status(ctx, job)


@command(
    "jobs",
    "List scripts started with `script`: state, runtime, cost so far, where results go.",
    arg("--json", flag=True, help="print one JSON document"),
)
async def jobs(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import jobs as ops

    await ops.catch_up(ctx.backend, await ctx.backend.ec2.list_instances(), progress=ctx.out.info)
    found = await ops.list_jobs(ctx.backend)
    if a.json:
        ctx.out.json([to_jsonable(j) for j in found])
        return 0
    if not found:
        ctx.out.info("no jobs; start one with `cloudsh script NAME FILE`")
        return 0
    ctx.out.print(table([_row(j) for j in found], JOB_COLUMNS))
    return 0


@command(
    "logs",
    "Print a job's output (-f: follow it live until the job ends).",
    arg("job", kind="job"),
    arg("--follow", "-f", flag=True, help="keep printing as it writes"),
)
async def logs(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import jobs as ops

    await ops.logs(ctx.backend, a.job, follow=a.follow, on_output=ctx.out.write)
    return 0


@command(
    "sync",
    "Copy results of a job (or of every job on a running box) home now; the local folder mirrors the box's.",
    arg("job", kind="job", nargs="?"),
    epilog=(
        "a file is copied when its size or time (to the nanosecond) differs from the box's; a file\n"
        "edited here since it was copied is kept as NAME.local-edited before the box's version replaces it"
    ),
)
async def sync(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import jobs as ops

    if a.job:
        results = [await ops.sync_job(ctx.backend, a.job, progress=ctx.out.info)]
    else:
        results = await ops.sync_all(ctx.backend, progress=ctx.out.info, strict=True)
        if not results:
            ctx.out.info("no jobs with results on a running box")
    for r in results:
        note = f", {r.pending} still being written" if r.pending else ""
        note += f", {len(r.local_edited)} local edit(s) kept as *.local-edited" if r.local_edited else ""
        ctx.out.print(f"{r.job_id}: {len(r.copied)} copied to {r.local_dir}{note}")
    return 0


@command(
    "job stop",
    "Stop a running job (SIGTERM to its processes); its files stay on the box.",
    arg("job", kind="job"),
    destructive=True,
)
async def job_stop(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import jobs as ops

    inst, _ = await ops.find_job(ctx.backend, a.job)
    await ctx.confirmed(f"Stop job {a.job} on {inst.label}?", yes=a.yes, what=f"stop job {a.job}")
    job = await ops.stop_job(ctx.backend, a.job)
    ctx.out.print(f"{job.id} {_state_text(job)}")
    return 0


@command(
    "job resume",
    "Run an interrupted job's script again with CLOUDSH_RESUME=1 (after pulling its results).",
    arg("job", kind="job"),
    arg("--follow", "-f", flag=True, help="stream its output and pull results until it ends"),
)
async def job_resume(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import jobs as ops

    inst, _ = await ops.find_job(ctx.backend, a.job)
    if inst.state in ("stopped", "stopping"):
        await _box_for_script(ctx, inst.id)
    job = await ops.resume_job(ctx.backend, a.job, progress=ctx.out.info)
    ctx.out.print(f"{job.id} running (run {job.runs})")
    if not a.follow:
        return 0
    job = await ops.follow(ctx.backend, job.id, on_output=ctx.out.write, progress=ctx.out.info)
    return _end_status(ctx, job)


@command(
    "sandbox interrupt",
    "Play a spot interruption on a sandbox instance: notice now, stop/terminate after the notice period.",
    arg("name", kind="instance"),
)
async def sandbox_interrupt(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.sandbox.control import sandbox_request

    b = ctx.backend
    if not b.sandbox:
        raise UsageError(
            "`sandbox interrupt` plays spot interruptions in the local sandbox only",
            "run it with --sandbox; on AWS, interruptions come from EC2",
        )
    [inst] = await find_all(ctx, [a.name])
    if inst.market != "spot":
        raise UsageError(
            f"{inst.label} is an on-demand instance; only spot instances are interrupted",
            "launch a spot box with `cloudsh launch NAME --spot`",
        )
    if inst.state != "running":
        raise InvalidState(f"{inst.label} is {inst.state}; only running instances are interrupted", "")
    notice_s = b.settings.sandbox_notice_s
    doc = {"instance_id": inst.id, "notice_s": notice_s}
    answer = await asyncio.to_thread(sandbox_request, b.settings, "/_sandbox/interrupt", doc, "the interruption")
    ctx.out.print(
        f"{inst.label}: spot interruption notice ({answer.get('action', 'stop')} at {answer.get('time', '?')}); "
        f"{answer.get('action', 'stop')} in {notice_s:g} s"
    )
    return 0
