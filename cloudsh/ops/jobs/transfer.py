"""Results home: a job's sync dir on the box copied to this machine, once or while it runs.

Results come home with rsync over the same OpenSSH settings as `ssh-config` (SFTP where
rsync is missing), only files no process on the box holds open for writing, through
temporary names: a local file under its final name is always complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudsh.errors import CloudshError, SSHError, UsageError
from cloudsh.models import HostInfo, Instance, Job, JobTag, job_tags
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.jobs.box import (
    AGENT_PATH,
    call_agent,
    find_job,
    full_id,
    install_agent,
    job_records,
    local_dir_of,
    local_records,
)
from cloudsh.ops.jobs.state import LIVE_JOB_STATES, pick_job, record_states
from cloudsh.ops.owners import own
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

OutputCallback = Callable[[str], None]

PARTIAL_DIR = ".cloudsh-partial"
#: rsync exit statuses worth another attempt: lost connection, protocol or I/O on the wire.
RSYNC_RETRY = frozenset({10, 11, 12, 20, 30, 35, 255})
RSYNC_OK = frozenset({0, 23, 24})  # 23/24: some file vanished or changed while listed
SYNC_ATTEMPTS = 4


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
    full = full_id(inst, job_id)
    local = local_dir_of(backend, full, tag)
    if local is None:
        raise UsageError(f"job {full} has no sync dir", "start scripts with --sync REMOTE_DIR[:LOCAL_DIR]")
    listing = await call_agent(backend, host, f"list {shlex.quote(tag.remote_dir)}")
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
    nothing at all could be pulled. Without `only`, boxes cloudsh did not launch are left
    alone (`ops.owners`).
    """
    results = []
    failed: CloudshError | None = None
    insts = await backend.ec2.list_instances()
    for inst in own(insts) if only is None else insts:
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
    """Stream the job's log and pull its results every `interval` s until it ends or its box
    goes; then record how it ended in its tag."""
    inst, tag = await find_job(backend, job_id)
    full = full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await install_agent(backend, host)
    done = asyncio.Event()

    async def tail() -> None:
        try:
            await backend.ssh.run(host, f"python3 {AGENT_PATH} logs {full} --follow", on_stdout=on_output)
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
    return pick_job(await record_states(backend, only=[inst.id]), full, job_id)


async def results_not_home(backend: Backend, inst: Instance) -> dict[str, int]:
    """Job id -> files on the box under its sync dir that are not home (for terminate previews)."""
    out: dict[str, int] = {}
    # Moved-off records count too: terminating the box would lose their results as well.
    tags = {j: t for j, t in job_records(inst, local_records(backend)).items() if t.remote_dir}
    if not tags or inst.state != "running":
        return out
    host = await ssh_host(backend, inst)
    for jid, tag in tags.items():
        local = local_dir_of(backend, jid, tag)
        listing = await call_agent(backend, host, f"list {shlex.quote(tag.remote_dir)}")
        files = listing.get("files", [])
        out[jid] = sum(1 for r, s, m in files if local is None or _needs(local, r, s, m))
    return out


def restarted_under_jobs(insts: Sequence[Instance]) -> list[Instance]:
    """Running boxes started after a job of theirs last recorded a start, with that job not
    recorded as over: EC2 restarted them (after an interruption) or another machine started
    them, and what their jobs wrote since is not home. EC2's LaunchTime is the last start."""
    out = []
    for inst in insts:
        if inst.state != "running" or inst.launch_time is None:
            continue
        since = inst.launch_time.timestamp()
        if any(
            t.remote_dir and t.state in LIVE_JOB_STATES and (t.started or 0) < since
            for t in job_tags(inst).values()
        ):
            out.append(inst)
    return out


async def catch_up(backend: Backend, insts: Sequence[Instance], *, progress: Progress = quiet) -> list[SyncResult]:
    """What `start` does for the boxes it starts, for boxes restarted with no laptop
    (`restarted_under_jobs`): bring their results home. Jobs that are over are recorded in
    their tags, so a box needs no more catching up once none of its jobs can write. Never
    raises: a box that does not answer is said through `progress` and tried next time."""
    boxes = restarted_under_jobs(insts)
    if not boxes:
        return []
    ids = [i.id for i in boxes]
    try:
        # Recorded first: a job that ends during the copy is caught up again next time.
        await record_states(backend, only=ids, ended_only=True)
        results = await sync_all(backend, progress=progress, only=ids)
    except CloudshError as exc:
        progress(f"results not pulled yet: {exc} (run `cloudsh sync` later)")
        return []
    return results
