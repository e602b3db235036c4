"""Long-running scripts on a box: start detached, watch, pull results home, survive interruptions.

On the box every job lives in `~/.cloudsh/jobs/<id>/`: the uploaded script, `job.json`
(what to run), `log` (its output), `state.json` (running / finished / interrupted /
stopped, exit status, times) and `agent.py`, a stdlib-only Python program (`AGENT`
below) that supervises the script. The supervisor is started with `setsid`, so it
survives SSH disconnects and the laptop going to sleep; it polls the instance metadata
`spot/instance-action` (IMDSv2) every 5 s and, on a notice, writes the marker file
`$CLOUDSH_INTERRUPT_FILE`, sends the script SIGTERM, flushes the filesystem and records
"interrupted". On EC2 the metadata lives at 169.254.169.254; sandbox boxes get their
own address in `CLOUDSH_IMDS_ENDPOINT`. The code is the same.

What every machine must know about a job is in the box's EC2 tags (`cloudsh:job:<id>`,
compact JSON), so `jobs` on another laptop sees it. Results come home with rsync over
the same OpenSSH settings as `ssh-config` (SFTP where rsync is missing), only files no
process on the box holds open for writing, through temporary names: a local file under
its final name is always complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudsh.errors import CloudshError, InvalidState, NotFound, SSHError, UsageError
from cloudsh.models import JOB_TAG_PREFIX as TAG_PREFIX
from cloudsh.models import HostInfo, Instance, Job, JobTag, hourly_cost, job_tags
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

OutputCallback = Callable[[str], None]

JOBS_DIR = ".cloudsh/jobs"  # relative to the login user's home, on the box
PARTIAL_DIR = ".cloudsh-partial"
#: rsync exit statuses worth another attempt: lost connection, protocol or I/O on the wire.
RSYNC_RETRY = frozenset({10, 11, 12, 20, 30, 35, 255})
RSYNC_OK = frozenset({0, 23, 24})  # 23/24: some file vanished or changed while listed
SYNC_ATTEMPTS = 4
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,60}$")


def _when(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if epoch else None


def _local_index(backend: Backend) -> Path:
    return backend.settings.state_dir / "jobs.json"


def _remember_local(backend: Backend, job_id: str, local: Path) -> None:
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


# -- finding and describing jobs -----------------------------------------------------


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


def _full_id(inst: Instance, job_id: str) -> str:
    ids = [j for j in job_tags(inst) if j == job_id] or [j for j in job_tags(inst) if j.startswith(job_id)]
    return ids[0]


def derive_state(tag: JobTag, inst: Instance, box: dict[str, Any] | None) -> str:
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


def _merge(tag: JobTag, state: str, box: dict[str, Any] | None) -> JobTag:
    new = replace(tag, state=state)
    if box:
        new = replace(
            new,
            started=box.get("started") or tag.started,
            ended=box.get("ended") or (box.get("noticed") if state == "interrupted" else None) or tag.ended,
            exit_status=box.get("exit") if box.get("exit") is not None else tag.exit_status,
            runs=int(box.get("runs") or tag.runs),
            before_s=float(box.get("before_s") or tag.before_s),
        )
    return new


def _job(job_id: str, inst: Instance, tag: JobTag, box: dict[str, Any] | None, price: float | None,
         local: Path | None) -> Job:
    now = time.time()
    run_s = 0.0
    if tag.started:
        end = tag.ended if tag.state != "running" and tag.ended else (now if tag.state == "running" else tag.ended or tag.started)
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


async def _agent(backend: Backend, host: HostInfo, args: str, *, timeout: float = 30.0) -> Any:
    """Run the box's agent (uploading it if missing) and parse its JSON answer."""
    cmd = f"python3 {JOBS_DIR}/agent.py {args}"
    result = await backend.ssh.run(host, cmd, timeout=timeout)
    if result.exit_status == 127 and "agent.py" not in result.stderr:
        raise CloudshError(f"{host.name} has no python3", "install python3 on the box (Ubuntu has it)")
    try:
        return json.loads(result.stdout)
    except ValueError:
        why = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise CloudshError(f"the job agent on {host.name} failed: {why}", "") from None


async def _install_agent(backend: Backend, host: HostInfo, job_id: str = "") -> None:
    target = f"{JOBS_DIR}/{job_id}" if job_id else JOBS_DIR
    cmd = f"mkdir -p {target} && cat > {JOBS_DIR}/.agent.py.tmp && mv {JOBS_DIR}/.agent.py.tmp {JOBS_DIR}/agent.py"
    result = await backend.ssh.run(host, cmd, stdin=AGENT)
    if not result.ok:
        raise CloudshError(
            f"cannot write to ~/{JOBS_DIR} on {host.name}: {result.stderr.strip()}", "check the box's disk"
        )


async def box_status(backend: Backend, host: HostInfo) -> dict[str, dict[str, Any]]:
    """Every job's state as the box sees it (one SSH command for all of them)."""
    await _install_agent(backend, host)
    data = await _agent(backend, host, "status")
    return {str(k): v for k, v in dict(data).items()}


async def list_jobs(backend: Backend, *, refresh_tags: bool = True) -> list[Job]:
    """All jobs on all boxes; asks running boxes for their live state, updates stale tags."""
    insts = await backend.ec2.list_instances(include_terminated=True)
    with_jobs = [(i, job_tags(i)) for i in insts]
    with_jobs = [(i, t) for i, t in with_jobs if t]
    if not with_jobs:
        return []

    async def ask(inst: Instance) -> dict[str, dict[str, Any]] | None:
        if inst.state != "running":
            return None
        try:
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
    jobs: list[Job] = []
    for (inst, tags), answer in zip(with_jobs, answers, strict=True):
        changed: dict[str, str] = {}
        for jid, tag in sorted(tags.items(), key=lambda kv: kv[1].started or 0):
            box = answer.get(jid, {"state": "missing"}) if answer is not None else None
            new = _merge(tag, derive_state(tag, inst, box), box)
            if new.encode() != tag.encode():
                changed[TAG_PREFIX + jid] = new.encode()
            price = hourly_cost(prices.get(inst.type), inst.market)
            jobs.append(_job(jid, inst, new, box, price, local_dir_of(backend, jid, new)))
        if changed and refresh_tags and inst.state not in ("terminated",):
            with contextlib.suppress(CloudshError):
                await backend.ec2.set_tags([inst.id], changed)
    return jobs


async def get_job(backend: Backend, job_id: str) -> Job:
    inst, _ = await find_job(backend, job_id)
    full = _full_id(inst, job_id)
    for job in await list_jobs(backend):
        if job.id == full:
            return job
    raise NotFound(f"no job {job_id!r}", "list jobs with `cloudsh jobs`")


# -- starting ---------------------------------------------------------------------------


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
    remote, local = "", None
    if sync:
        remote, sep, local_text = sync.partition(":")
        if not remote or (sep and not local_text):
            raise UsageError(f"bad --sync {sync!r}", "use REMOTE_DIR or REMOTE_DIR:LOCAL_DIR, e.g. out:./results")
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
    progress(f"uploading {plan.script.name} to {inst.label}")
    await _install_agent(backend, host, job_id)
    tagged = False
    try:
        await backend.ssh.put(host, plan.script, f"{jobdir}/{plan.script.name}", recursive=False)
        if plan.workdir is not None:
            progress(f"uploading {plan.workdir.name}/ to {inst.label}:~/{plan.workdir.name}")
            await backend.ssh.put(host, plan.workdir, plan.workdir.name)
        spec = {"script": plan.script.name, "sync_dir": plan.remote_dir, "env": plan.env}
        tag = JobTag(plan.script.name, "starting", started=time.time(), remote_dir=plan.remote_dir,
                     local_dir=str(plan.local_dir or ""))
        await backend.ec2.set_tags([inst.id], {TAG_PREFIX + job_id: tag.encode()})
        tagged = True
        answer = await _agent(backend, host, f"start {job_id} --spec {shlex.quote(json.dumps(spec))}")
        if not answer.get("ok"):
            raise CloudshError(str(answer.get("error", "the job did not start")), str(answer.get("hint", "")))
        state = answer["state"]
        tag = replace(tag, state="running", started=state.get("started"), remote_dir=answer.get("sync_dir", ""))
        await backend.ec2.set_tags([inst.id], {TAG_PREFIX + job_id: tag.encode()})
    except BaseException:
        with contextlib.suppress(CloudshError):
            await backend.ssh.run(host, f"rm -rf {jobdir}", timeout=15)
        if tagged:
            with contextlib.suppress(CloudshError):
                await backend.ec2.call("delete_tags", Resources=[inst.id], Tags=[{"Key": TAG_PREFIX + job_id}])
        raise
    if plan.local_dir is not None:
        plan.local_dir.mkdir(parents=True, exist_ok=True)
        _remember_local(backend, job_id, plan.local_dir)
    progress(f"job {job_id} running on {inst.label}")
    return _job(job_id, inst, tag, state, None, plan.local_dir)


async def stop_job(backend: Backend, job_id: str, *, wait_s: float = 15.0) -> Job:
    """SIGTERM the job's processes; returns once the box says it is no longer running."""
    inst, _ = await find_job(backend, job_id)
    full = _full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await _install_agent(backend, host)
    await _agent(backend, host, f"stop {full} --wait {wait_s:g}", timeout=wait_s + 15)
    return await get_job(backend, full)


async def resume_job(backend: Backend, job_id: str, *, progress: Progress = quiet) -> Job:
    """Pull what is not yet home, then run the script again with CLOUDSH_RESUME=1."""
    inst, tag = await find_job(backend, job_id)
    full = _full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    job = await get_job(backend, full)
    if job.state in ("running", "starting"):
        raise InvalidState(f"job {full} is still running", f"follow it with `cloudsh logs {full} -f`")
    if job.local_dir:
        progress(f"pulling results of {full} from {inst.label}")
        await sync_job(backend, full, progress=progress)
    await _install_agent(backend, host)
    answer = await _agent(backend, host, f"start {full} --resume")
    if not answer.get("ok"):
        raise CloudshError(str(answer.get("error", "the job did not start")), str(answer.get("hint", "")))
    state = answer["state"]
    new = replace(tag, state="running", started=state.get("started"), ended=None, exit_status=None,
                  runs=int(state.get("runs", tag.runs + 1)), before_s=float(state.get("before_s", 0.0)))
    await backend.ec2.set_tags([inst.id], {TAG_PREFIX + full: new.encode()})
    progress(f"job {full} resumed on {inst.label} (run {new.runs})")
    return _job(full, inst, new, state, None, Path(job.local_dir) if job.local_dir else None)


# -- logs ---------------------------------------------------------------------------------


async def logs(backend: Backend, job_id: str, *, follow: bool, on_output: OutputCallback) -> None:
    inst, _ = await find_job(backend, job_id)
    full = _full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await _install_agent(backend, host)
    await backend.ssh.run(
        host, f"python3 {JOBS_DIR}/agent.py logs {full}" + (" --follow" if follow else ""), on_stdout=on_output
    )


# -- results home -------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    job_id: str
    local_dir: Path
    copied: tuple[str, ...]
    pending: int  # files on the box not home after this pass (being written, or failed)
    method: str  # "rsync" | "sftp"


def _needs(local: Path, rel: str, size: int, mtime: float) -> bool:
    try:
        st = (local / rel).stat()
    except OSError:
        return True
    return st.st_size != size or int(st.st_mtime) != int(mtime)


def _ssh_config(backend: Backend, host: HostInfo) -> Path:
    from cloudsh.services.openssh import ssh_config_block

    directory = backend.settings.state_dir / "ssh"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{host.host_key_alias}.config"
    text = ssh_config_block(host.host_key_alias, host, backend.settings) + "    BatchMode yes\n"
    if not path.exists() or path.read_text() != text:
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


async def _rsync(backend: Backend, host: HostInfo, remote: str, local: Path, files: Sequence[str]) -> list[str]:
    config = _ssh_config(backend, host)
    with tempfile.NamedTemporaryFile("wb", prefix="cloudsh-files-", delete=False) as f:
        f.write(b"\0".join(p.encode() for p in files))
        listing = f.name
    try:
        argv = [
            "rsync", "-a", f"--partial-dir={PARTIAL_DIR}", "--from0", f"--files-from={listing}",
            "--out-format=%n", "--timeout=60", "-e", f"ssh -F {shlex.quote(str(config))}",
            f"{host.host_key_alias}:{remote.rstrip('/')}/", f"{local}/",
        ]
        for attempt in range(SYNC_ATTEMPTS):
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await proc.communicate()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            if proc.returncode in RSYNC_OK:
                return [line for line in out.decode(errors="replace").splitlines() if line and not line.endswith("/")]
            if proc.returncode not in RSYNC_RETRY or attempt == SYNC_ATTEMPTS - 1:
                why = (err.decode(errors="replace").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                raise SSHError(f"copying results from {host.name} failed: {why}", "run `cloudsh sync` again")
            # The connection dropped: the next pass resumes from the partial file.
            await asyncio.sleep(0.5 * (attempt + 1))
        return []
    finally:
        os.unlink(listing)
        with contextlib.suppress(OSError):
            (local / PARTIAL_DIR).rmdir()


async def _sftp(backend: Backend, host: HostInfo, remote: str, local: Path, files: Sequence[str]) -> list[str]:
    copied = []
    for rel in files:
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(SYNC_ATTEMPTS):
            try:
                await backend.ssh.get(host, f"{remote.rstrip('/')}/{rel}", target, recursive=False)
                break
            except SSHError:
                if attempt == SYNC_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))
        copied.append(rel)
    return copied


async def sync_job(
    backend: Backend, job_id: str, *, progress: Progress = quiet, use_rsync: bool | None = None,
    _located: tuple[Instance, JobTag, HostInfo] | None = None,
) -> SyncResult:
    """One pass: copy every changed, closed file under the job's sync dir home."""
    if _located is None:
        inst, tag = await find_job(backend, job_id)
        host = await ssh_host(backend, inst)
    else:
        inst, tag, host = _located
    full = _full_id(inst, job_id)
    local = local_dir_of(backend, full, tag)
    if local is None:
        raise UsageError(f"job {full} has no sync dir", "start scripts with --sync REMOTE_DIR[:LOCAL_DIR]")
    listing = await _agent(backend, host, f"list {shlex.quote(tag.remote_dir)}")
    if listing.get("error"):
        raise CloudshError(f"cannot list {tag.remote_dir} on {inst.label}: {listing['error']}", "")
    remote = str(listing["dir"])
    files = [(str(r), int(s), float(m)) for r, s, m in listing["files"]]
    todo = [r for r, s, m in files if _needs(local, r, s, m)]
    local.mkdir(parents=True, exist_ok=True)
    if use_rsync is None:
        use_rsync = bool(listing.get("rsync")) and shutil.which("rsync") is not None
    copied: list[str] = []
    if todo:
        copy = _rsync if use_rsync else _sftp
        copied = await copy(backend, host, remote, local, todo)
        if copied:
            progress(f"{full}: {len(copied)} file{'s' if len(copied) != 1 else ''} home in {local}")
    pending = sum(1 for r, s, m in files if _needs(local, r, s, m)) + int(listing.get("open", 0))
    return SyncResult(full, local, tuple(copied), pending, "rsync" if use_rsync else "sftp")


async def sync_all(
    backend: Backend, *, progress: Progress = quiet, only: Sequence[str] | None = None
) -> list[SyncResult]:
    """`sync` without a job: every job with a sync dir on a running box (or on the boxes
    whose ids are in `only`).

    One box that does not answer must not keep the others' results from coming home:
    its jobs are skipped (said through `progress`), and its error is raised only when
    nothing at all could be pulled.
    """
    results = []
    failed: CloudshError | None = None
    for inst in await backend.ec2.list_instances():
        tags = {j: t for j, t in job_tags(inst).items() if t.remote_dir}
        if not tags or inst.state != "running" or (only is not None and inst.id not in only):
            continue
        try:
            host = await ssh_host(backend, inst)
            for jid, tag in tags.items():
                results.append(await sync_job(backend, jid, progress=progress, _located=(inst, tag, host)))
        except CloudshError as exc:
            progress(f"{inst.label}: results not pulled: {exc}")
            failed = failed or exc
    if failed is not None and not results:
        raise failed
    return results


async def follow(
    backend: Backend,
    job_id: str,
    *,
    on_output: OutputCallback,
    progress: Progress = quiet,
    interval: float = 1.0,
    on_sync: Callable[[SyncResult], None] | None = None,
) -> Job:
    """Stream the job's log and pull its results every `interval` s until it ends or its box goes."""
    inst, tag = await find_job(backend, job_id)
    full = _full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await _install_agent(backend, host)
    done = asyncio.Event()

    async def tail() -> None:
        try:
            await backend.ssh.run(host, f"python3 {JOBS_DIR}/agent.py logs {full} --follow", on_stdout=on_output)
        except CloudshError as exc:
            progress(f"log stream ended: {exc}")
        finally:
            done.set()

    last_error = ""

    async def pull() -> None:
        nonlocal last_error
        try:
            result = await sync_job(backend, full, _located=(inst, tag, host))
        except CloudshError as exc:
            # Keep following (the box may come back); say each new problem once.
            if str(exc) != last_error:
                progress(f"sync: {exc}")
            last_error = str(exc)
            return
        last_error = ""
        if on_sync is not None:
            on_sync(result)
        if result.copied:
            progress(f"{full}: {len(result.copied)} file{'s' if len(result.copied) != 1 else ''} home")

    tailer = asyncio.ensure_future(tail())
    try:
        while not done.is_set():
            if tag.remote_dir:
                await pull()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), interval)
        await tailer
        if tag.remote_dir:
            await pull()  # what the job wrote last
    finally:
        tailer.cancel()
    return await get_job(backend, full)


# -- terminate preview ------------------------------------------------------------------------


async def results_not_home(backend: Backend, inst: Instance) -> dict[str, int]:
    """Job id -> files on the box under its sync dir that are not home (for terminate previews)."""
    out: dict[str, int] = {}
    tags = {j: t for j, t in job_tags(inst).items() if t.remote_dir}
    if not tags or inst.state != "running":
        return out
    host = await ssh_host(backend, inst)
    for jid, tag in tags.items():
        local = local_dir_of(backend, jid, tag)
        listing = await _agent(backend, host, f"list {shlex.quote(tag.remote_dir)}")
        files = listing.get("files", [])
        out[jid] = sum(1 for r, s, m in files if local is None or _needs(local, r, s, m))
    return out


# -- the program that runs on the box -----------------------------------------------------------

AGENT = r'''#!/usr/bin/env python3
"""cloudsh job agent: runs one job detached on this box and watches for spot interruptions.

Written by cloudsh into ~/.cloudsh/jobs/agent.py; stdlib only. Subcommands print JSON.
"""
import json, os, shutil, signal, subprocess, sys, time, urllib.error, urllib.request

HOME = os.path.expanduser("~")
JOBS = os.path.join(HOME, ".cloudsh", "jobs")
POLL_S = 5.0
IMDS = os.environ.get("CLOUDSH_IMDS_ENDPOINT", "http://169.254.169.254").rstrip("/")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def jobdir(jid):
    return os.path.join(JOBS, jid)


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_supervisor(pid, jid):
    try:
        with open("/proc/%d/cmdline" % int(pid), "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, TypeError, ValueError):
        return False
    return b"supervise" in argv and jid.encode() in argv


def tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [l for l in lines if l.strip()][-n:]


def status(jid):
    d = jobdir(jid)
    st = read_json(os.path.join(d, "state.json"))
    if st is None:
        return {"state": "lost" if os.path.isdir(d) else "missing"}
    if st.get("state") == "running" and not is_supervisor(st.get("pid"), jid):
        st["state"] = "lost"  # the box restarted under it, or it was killed
    st["tail"] = tail(os.path.join(d, "log"), 3)
    return st


def imds(method, path, headers):
    req = urllib.request.Request(IMDS + path, method=method, headers=headers)
    with OPENER.open(req, timeout=1.0) as r:
        return r.read().decode()


def notice(token):
    """(instance-action document or None, token to reuse)."""
    try:
        if token is None:
            token = imds("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        body = imds("GET", "/latest/meta-data/spot/instance-action", {"X-aws-ec2-metadata-token": token})
        return json.loads(body), token
    except urllib.error.HTTPError as e:
        return None, (None if e.code == 401 else token)
    except (OSError, ValueError):
        return None, None


def supervise(jid, resume):
    d = jobdir(jid)
    spec = read_json(os.path.join(d, "job.json"))
    prev = read_json(os.path.join(d, "state.json"), {}) or {}
    marker = os.path.join(d, "interrupted")
    for name in (marker, os.path.join(d, "stop-requested")):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    before = float(prev.get("before_s", 0.0))
    if prev.get("started"):
        before += max(0.0, float(prev.get("ended") or prev.get("noticed") or prev["started"]) - float(prev["started"]))
    env = dict(os.environ)
    env.pop("CLOUDSH_RESUME", None)
    env.update(spec.get("env", {}))
    env.update(CLOUDSH_JOB_ID=jid, CLOUDSH_JOB_DIR=d, CLOUDSH_INTERRUPT_FILE=marker,
               CLOUDSH_SYNC_DIR=spec.get("sync_dir", ""))
    if resume:
        env["CLOUDSH_RESUME"] = "1"
    log = open(os.path.join(d, "log"), "ab")
    if resume:
        log.write(b"[cloudsh] resuming with CLOUDSH_RESUME=1\n")
        log.flush()
    state = {"id": jid, "state": "running", "pid": os.getpid(), "started": time.time(),
             "runs": int(prev.get("runs", 0)) + 1, "before_s": before, "script": spec["script"]}
    sp = os.path.join(d, "state.json")
    try:
        child = subprocess.Popen([os.path.join(d, spec["script"])], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=HOME, env=env, start_new_session=True)
    except OSError as e:
        log.write(("[cloudsh] cannot run %s: %s\n" % (spec["script"], e)).encode())
        state.update(state="finished", exit=126, ended=time.time())
        write_json(sp, state)
        return
    state["child"] = child.pid
    write_json(sp, state)
    token, next_poll, interrupted = None, 0.0, False
    while child.poll() is None:
        now = time.monotonic()
        if not interrupted and now >= next_poll:
            next_poll = now + POLL_S
            action, token = notice(token)
            if action:
                interrupted = True
                with open(marker, "w") as f:
                    f.write(json.dumps(action) + "\n")
                state.update(state="interrupted", noticed=time.time(), notice=action)
                write_json(sp, state)
                log.write(("\n[cloudsh] spot interruption notice (%s at %s): sending SIGTERM\n"
                           % (action.get("action"), action.get("time"))).encode())
                log.flush()
                try:
                    os.killpg(child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                os.sync()
        time.sleep(0.1)
    rc = child.returncode
    os.sync()
    state.update(ended=time.time(), exit=128 - rc if rc < 0 else rc)
    if not interrupted:
        state["state"] = "stopped" if os.path.exists(os.path.join(d, "stop-requested")) else "finished"
    write_json(sp, state)


def start(jid, spec_text, resume):
    d = jobdir(jid)
    if spec_text is not None:
        spec = json.loads(spec_text)
        sync_dir = spec.get("sync_dir") or ""
        if sync_dir:
            sync_dir = os.path.abspath(os.path.join(HOME, os.path.expanduser(sync_dir)))
            try:
                os.makedirs(sync_dir, exist_ok=True)
            except OSError as e:
                return {"ok": False, "error": "cannot create sync dir %s on the box: %s" % (sync_dir, e.strerror),
                        "hint": "pick a dir under the home directory, or make it writable first"}
            if not os.access(sync_dir, os.W_OK | os.X_OK):
                return {"ok": False, "error": "sync dir %s on the box is not writable" % sync_dir,
                        "hint": "pick a dir under the home directory, or make it writable first"}
        spec["sync_dir"] = sync_dir
        script = os.path.join(d, spec["script"])
        if not os.access(script, os.X_OK):
            return {"ok": False, "error": "the uploaded script is not executable on the box", "hint": ""}
        write_json(os.path.join(d, "job.json"), spec)
    spec = read_json(os.path.join(d, "job.json"))
    if spec is None:
        return {"ok": False, "error": "job %s has no files on this box" % jid,
                "hint": "its disk was replaced; start the script again"}
    st = status(jid) if os.path.exists(os.path.join(d, "state.json")) else {}
    if st.get("state") == "running" or (st.get("pid") and is_supervisor(st.get("pid"), jid)):
        return {"ok": False, "error": "job %s is still running" % jid, "hint": ""}
    argv = [sys.executable, os.path.abspath(__file__), "supervise", jid] + (["--resume"] if resume else [])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=HOME, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = read_json(os.path.join(d, "state.json"), {}) or {}
        if st.get("pid") == proc.pid:
            return {"ok": True, "state": st, "sync_dir": spec.get("sync_dir", "")}
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    return {"ok": False, "error": "the job supervisor did not start", "hint": "see ~/.cloudsh/jobs/%s/log" % jid}


def open_for_write():
    me, out = str(os.getpid()), set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
                if not target.startswith("/"):
                    continue
                with open("/proc/%s/fdinfo/%s" % (pid, fd)) as f:
                    flags = next((int(l.split()[1], 8) for l in f if l.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            if flags & 3:
                out.add(target)
    return out


def listing(path):
    root = os.path.realpath(os.path.join(HOME, os.path.expanduser(path)))
    if not os.path.isdir(root):
        return {"dir": root, "files": [], "rsync": bool(shutil.which("rsync"))}
    busy = open_for_write()
    files, still_open = [], 0
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".cloudsh-partial"]
        for name in names:
            full = os.path.join(dirpath, name)
            if full in busy:
                still_open += 1
                continue
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if os.path.isfile(full) and not os.path.islink(full):
                files.append([os.path.relpath(full, root), st.st_size, st.st_mtime])
    return {"dir": root, "files": files, "open": still_open, "rsync": bool(shutil.which("rsync"))}


def logs(jid, follow):
    d = jobdir(jid)
    out = sys.stdout.buffer
    try:
        f = open(os.path.join(d, "log"), "rb")
    except OSError:
        return
    with f:
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not follow:
                return
            st = read_json(os.path.join(d, "state.json"), {}) or {}
            if not is_supervisor(st.get("pid"), jid):
                rest = f.read()
                if rest:
                    out.write(rest)
                    out.flush()
                return
            time.sleep(0.1)


def stop(jid, wait_s):
    d = jobdir(jid)
    st = read_json(os.path.join(d, "state.json"), {}) or {}
    if st.get("state") != "running" or not is_supervisor(st.get("pid"), jid):
        return status(jid)
    open(os.path.join(d, "stop-requested"), "w").close()
    try:
        os.killpg(int(st["child"]), signal.SIGTERM)
    except (ProcessLookupError, KeyError, ValueError):
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and is_supervisor(st.get("pid"), jid):
        time.sleep(0.1)
    return status(jid)


def main(argv):
    cmd, args = argv[0], argv[1:]
    if cmd == "supervise":
        supervise(args[0], "--resume" in args)
        return 0
    if cmd == "start":
        spec = args[args.index("--spec") + 1] if "--spec" in args else None
        answer = start(args[0], spec, "--resume" in args)
    elif cmd == "status":
        ids = args or sorted(x for x in os.listdir(JOBS) if os.path.isdir(jobdir(x))) if os.path.isdir(JOBS) else args
        answer = {jid: status(jid) for jid in ids}
    elif cmd == "list":
        answer = listing(args[0])
    elif cmd == "logs":
        logs(args[0], "--follow" in args)
        return 0
    elif cmd == "stop":
        answer = stop(args[0], float(args[args.index("--wait") + 1]) if "--wait" in args else 15.0)
    else:
        print("unknown command %s" % cmd, file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''
