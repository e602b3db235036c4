"""Results home: a job's sync dir on the box copied to this machine, once or while it runs.

Results come home with rsync over the same OpenSSH settings as `ssh-config` (SFTP where
rsync is missing), only files no process on the box holds open for writing, through
temporary names: a local file under its final name is always complete. A pass is one SSH
session, as plain rsync's (`_one_session`); the pass that lists the box's files over the
pooled connection first (`sync_job`'s second half) runs only where that one did not work.

Sync mirrors the box. A file is copied when its size or its modification time, to the
nanosecond, differs from the local copy (whose time is the box's, set by the copy), so a
file rewritten with the same size within a second still comes home. What was copied is
remembered (`state_dir/sync/<job>.json`): a local file changed since its copy is kept as
`NAME.local-edited` beside the box's version. File names are bytes, as on the box: a name
that is not UTF-8 travels as Python's surrogate escapes (`os.fsencode`). What each pass
left on the box is remembered too (`jobs.box.remember_pass`), for boxes that cannot be asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudsh.errors import CloudshError, SSHError, UsageError
from cloudsh.models import HostInfo, Instance, Job, JobTag, job_tags
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.jobs.box import (
    AGENT_PATH,
    JOBS_DIR,
    call_agent,
    find_job,
    full_id,
    install_agent,
    job_records,
    local_dir_of,
    local_records,
    remember_pass,
)
from cloudsh.ops.jobs.state import LIVE_JOB_STATES, pick_job, record_states
from cloudsh.ops.owners import own
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

OutputCallback = Callable[[str], None]

PARTIAL_DIR = ".cloudsh-partial"
#: rsync exit statuses worth another attempt: lost connection, protocol or I/O on the wire.
RSYNC_RETRY = frozenset({10, 11, 12, 20, 30, 35, 255})
RSYNC_OK = frozenset({0, 24})  # 24: some file vanished while listed (the next pass sees it)
LOCAL_EDITED = ".local-edited"
SYNC_ATTEMPTS = 4
REMOTE_LIST_AT = 200  # more names than this go to the box as a file (see `_file_list`)
_NO_RSYNC: set[str] = set()  # boxes whose listing said they have no rsync: copied over SFTP


@dataclass(frozen=True)
class SyncResult:
    job_id: str
    local_dir: Path
    copied: tuple[str, ...]
    pending: int  # files on the box not home after this pass (being written, or failed)
    method: str  # "rsync" | "sftp"
    local_edited: tuple[str, ...] = ()  # local edits kept as NAME.local-edited


def _here(local: Path, rel: str) -> tuple[int, int] | None:
    """Size and mtime (ns) of the local copy; None if there is none."""
    try:
        st = (local / rel).stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _needs(local: Path, rel: str, size: int, mtime_ns: int) -> bool:
    return _here(local, rel) != (size, mtime_ns)


def _listed(listing: dict[str, Any]) -> list[tuple[str, int, int]]:
    """The agent's files as (name, size, mtime in ns); an older agent sent float seconds."""
    return [(str(r), int(s), m if isinstance(m, int) else int(m * 1e9)) for r, s, m in listing["files"]]


def shown(name: str | Path) -> str:
    """A file name fit to print: bytes that are not UTF-8 shown as U+FFFD."""
    return os.fsencode(name).decode(errors="replace")


def _manifest_path(backend: Backend, job_id: str) -> Path:
    return backend.settings.state_dir / "sync" / f"{job_id}.json"


def _load_manifest(backend: Backend, job_id: str) -> dict[str, list[int]]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(_manifest_path(backend, job_id).read_text()))
    return {}


def _save_manifest(backend: Backend, job_id: str, manifest: dict[str, list[int]]) -> None:
    path = _manifest_path(backend, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, path)


def _aside(path: Path) -> Path:
    """Where a local edit of `path` is kept: NAME.local-edited (or .2, .3, ... if taken)."""
    target = path.with_name(path.name + LOCAL_EDITED)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{LOCAL_EDITED}.{n}")
    return target


def _keep_local_edits(local: Path, present: dict[str, tuple[int, int]], manifest: dict[str, list[int]]) -> list[str]:
    """Local files (name -> size, mtime) about to be replaced that changed here since sync
    copied them (or that sync never wrote): renamed to NAME.local-edited. Returns their names."""
    kept = []
    for rel, seen in present.items():
        path = local / rel
        if manifest.get(rel) == list(seen):
            continue
        try:
            os.replace(path, _aside(path))
        except OSError as exc:
            raise _local_error(path, exc) from None
        kept.append(rel)
    return kept


def _sort_replaced(local: Path, replaced: Path, manifest: dict[str, list[int]]) -> list[str]:
    """rsync moved each local file it replaced into `replaced` (--backup-dir): one sync
    copied and nobody changed since is dropped, any other (a local edit, or a file sync
    never wrote) is kept beside the box's version as NAME.local-edited. Returns those names."""
    kept = []
    for rel in _local_files(replaced):
        old = replaced / rel
        st = old.lstat()
        if manifest.get(rel) == [st.st_size, st.st_mtime_ns]:
            old.unlink()
            continue
        try:
            os.replace(old, _aside(local / rel))
        except OSError as exc:
            raise _local_error(local / rel, exc) from None
        kept.append(rel)
    for directory, _, _ in sorted(os.walk(replaced), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(directory)
    return kept


def _local_error(path: Path, exc: OSError) -> CloudshError:
    return CloudshError(
        f"cannot write results to {shown(path)}: {exc.strerror or exc}",
        "make the folder writable (or give --sync another LOCAL_DIR), then run `cloudsh sync` again",
    )


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


async def _file_list(backend: Backend, host: HostInfo, files: Sequence[str]) -> tuple[str, str | None]:
    """rsync's --files-from for `files` (NUL-separated): a local file for a few names, a
    file on the box for many, because rsync forwards a local list to the box name by name
    (5,000 names: 2.6 s against 1.0 s from a list on the box). Returns the option and the
    box's path to remove afterwards."""
    data = b"\0".join(os.fsencode(p) for p in files)
    if len(files) > REMOTE_LIST_AT:
        path = f"{JOBS_DIR}/.files-{uuid.uuid4().hex[:8]}"
        result = await backend.ssh.run(host, f"cat > {path}", stdin=data)
        if result.ok:
            return f"--files-from=:{path}", path
    with tempfile.NamedTemporaryFile("wb", prefix="cloudsh-files-", delete=False) as f:
        f.write(data)
    return f"--files-from={f.name}", None


async def _run_rsync(argv: Sequence[str]) -> tuple[int | None, bytes, bytes]:
    """Run rsync to the end; its exit status, stdout and stderr. Cancelled (Ctrl-C), it is killed."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out, err


async def _rsync(backend: Backend, host: HostInfo, remote: str, local: Path, files: Sequence[str]) -> list[str]:
    config = _ssh_config(backend, host)
    files_from, on_box = await _file_list(backend, host, files)
    try:
        argv = [
            # -I: every listed file differs (by size or ns time), so none is skipped by
            # rsync's own whole-second check.
            "rsync", "-a", "-I", f"--partial-dir={PARTIAL_DIR}", "--from0", files_from,
            "--timeout=60", "-e", f"ssh -F {shlex.quote(str(config))}",
            f"{host.host_key_alias}:{remote.rstrip('/')}/", f"{local}/",
        ]
        for attempt in range(SYNC_ATTEMPTS):
            returncode, _, err = await _run_rsync(argv)
            if returncode in RSYNC_OK:
                return list(files)
            lines = err.decode(errors="replace").strip().splitlines()
            if returncode == 23:
                # Some files were not written: name the first one rsync complained of.
                why = next((ln for ln in lines if ln.startswith("rsync:")), lines[0] if lines else "")
                raise CloudshError(
                    f"copying results from {host.name} to {local} failed: {why}",
                    "make the folder writable (or give --sync another LOCAL_DIR), then run `cloudsh sync` again",
                )
            if returncode not in RSYNC_RETRY or attempt == SYNC_ATTEMPTS - 1:
                why = (lines or [f"exit status {returncode}"])[-1]
                raise SSHError(f"copying results from {host.name} failed: {why}", "run `cloudsh sync` again")
            # The connection dropped: the next pass resumes from the partial file.
            await asyncio.sleep(0.5 * (attempt + 1))
        return []
    finally:
        if on_box is None:
            os.unlink(files_from.partition("=")[2])
        else:
            with contextlib.suppress(CloudshError):
                await backend.ssh.run(host, f"rm -f {on_box}", timeout=15)
        with contextlib.suppress(OSError):
            (local / PARTIAL_DIR).rmdir()


def _names(out: bytes) -> list[str]:
    """The files rsync's `--out-format=%n` lines name (directories end in "/"); rsync
    writes a byte it will not print as \\#ooo, and a backslash that would read as one too."""
    names = re.sub(rb"\\#([0-7]{3})", lambda m: bytes([int(m[1], 8)]), out).split(b"\n")
    return [os.fsdecode(n) for n in names if n and not n.endswith(b"/")]


async def _one_session(
    backend: Backend, host: HostInfo, job_id: str, remote_dir: str, local: Path
) -> tuple[list[str], list[str], int | None]:
    """One pass in one SSH session, the work plain rsync does: within rsync's own call
    (`--rsync-path`) the agent names the files still open for writing, which rsync on the
    box leaves out; rsync copies what differs by size or by time to the nanosecond
    (`--modify-window=-1`), with its times. A local file rsync replaces goes to a hidden
    folder first (`--backup-dir`), where `_sort_replaced` keeps it if it was edited here.
    Returns (copied, kept as local edits, how many are still open on the box, None if the
    pass did not work: the listing pass then runs, and says why)."""
    replaced = local / f".cloudsh-replaced-{uuid.uuid4().hex[:8]}"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", job_id)
    agent = (f"python3 -S {AGENT_PATH} exclude {shlex.quote(remote_dir)} {name} >&2 && "
             f"rsync --from0 --exclude-from={JOBS_DIR}/.open-{name}")
    try:
        returncode, out, err = await _run_rsync([
            "rsync", "-a", "--no-D", "--modify-window=-1", f"--partial-dir={PARTIAL_DIR}", "--backup",
            f"--backup-dir={replaced.name}", "--out-format=%n", f"--rsync-path={agent}", "--timeout=60",
            "-e", f"ssh -F {shlex.quote(str(_ssh_config(backend, host)))}",
            f"{host.host_key_alias}:{remote_dir.rstrip('/')}/", f"{local}/",
        ])
    finally:
        manifest = _load_manifest(backend, job_id) if replaced.exists() else {}
        kept = _sort_replaced(local, replaced, manifest) if replaced.exists() else []
    copied = _names(out)
    if copied:
        manifest = manifest or _load_manifest(backend, job_id)
        for rel in copied:
            with contextlib.suppress(OSError):
                st = (local / rel).lstat()
                manifest[rel] = [st.st_size, st.st_mtime_ns]
        _save_manifest(backend, job_id, manifest)
    said = [ln for ln in err.decode(errors="replace").splitlines() if ln.startswith('{"open"')]
    if returncode not in RSYNC_OK or not said:
        return copied, kept, None
    return copied, kept, int(json.loads(said[-1])["open"])


def _local_files(local: Path) -> list[str]:
    """Names of the files and symbolic links under `local` (relative)."""
    out = []
    for directory, dirs, names in os.walk(local):
        links = [d for d in dirs if os.path.islink(os.path.join(directory, d))]
        out += [os.path.relpath(os.path.join(directory, n), local) for n in names + links]
    return out


async def _sftp(backend: Backend, host: HostInfo, remote: str, local: Path, files: Sequence[str]) -> list[str]:
    copied = []
    for rel in files:
        target = local / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _local_error(target.parent, exc) from None
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


def _said(progress: Progress, job_id: str, local: Path, copied: Sequence[str], kept: Sequence[str]) -> None:
    for rel in kept:
        progress(f"{job_id}: {shown(rel)} was edited here; kept as {shown(rel)}{LOCAL_EDITED}")
    if copied:
        progress(f"{job_id}: {len(copied)} file{'s' if len(copied) != 1 else ''} home in {local}")


async def sync_job(
    backend: Backend, job_id: str, *, progress: Progress = quiet, use_rsync: bool | None = None,
    over: bool = False, _located: tuple[Instance, JobTag, HostInfo] | None = None,
) -> SyncResult:
    """One pass: copy every changed, closed file under the job's sync dir home. `over`: the
    job is known to have ended before the pass began (as is one its tag records as over);
    such a pass that leaves nothing on the box brought all of it home (`results_home`)."""
    if _located is None:
        inst, tag = await find_job(backend, job_id)
        host = await ssh_host(backend, inst)
    else:
        inst, tag, host = _located
    full = full_id(inst, job_id)
    local = local_dir_of(backend, full, tag)
    if local is None:
        raise UsageError(f"job {full} has no sync dir", "start scripts with --sync REMOTE_DIR[:LOCAL_DIR]")
    over = over or tag.state not in LIVE_JOB_STATES
    try:
        local.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _local_error(local, exc) from None
    came: list[str] = []  # by the one-session pass, when it failed on the way
    kept: list[str] = []
    if use_rsync is not False and shutil.which("rsync") and inst.id not in _NO_RSYNC:
        came, kept, still_open = await _one_session(backend, host, full, tag.remote_dir, local)
        if still_open is not None:
            _said(progress, full, local, came, kept)
            remember_pass(backend, full, tag, still_open, over)
            return SyncResult(full, local, tuple(came), still_open, "rsync", tuple(kept))
    listing = await call_agent(backend, host, f"list {shlex.quote(tag.remote_dir)}")
    if listing.get("error"):
        raise CloudshError(f"cannot list {tag.remote_dir} on {inst.label}: {listing['error']}", "")
    remote = str(listing["dir"])
    files = _listed(listing)
    here = {r: _here(local, r) for r, _, _ in files}
    todo = [r for r, s, m in files if here[r] != (s, m)]
    if use_rsync is None:
        use_rsync = bool(listing.get("rsync")) and shutil.which("rsync") is not None
        if not listing.get("rsync"):
            _NO_RSYNC.add(inst.id)
    copied: list[str] = []
    if todo:
        manifest = _load_manifest(backend, full)
        kept += _keep_local_edits(local, {r: seen for r in todo if (seen := here[r]) is not None}, manifest)
        copy = _rsync if use_rsync else _sftp
        await copy(backend, host, remote, local, todo)
        wanted = {r: (s, m) for r, s, m in files}
        for rel in todo:
            with contextlib.suppress(OSError):
                st = (local / rel).stat()
                if not use_rsync and st.st_size == wanted[rel][0]:
                    # SFTP keeps whole seconds: stamp the listed time (a file rewritten
                    # since then has a newer one on the box, and comes again).
                    os.utime(local / rel, ns=(st.st_atime_ns, wanted[rel][1]))
                    st = (local / rel).stat()
                manifest[rel] = [st.st_size, st.st_mtime_ns]
                if (st.st_size, st.st_mtime_ns) == wanted[rel]:
                    copied.append(rel)
        _save_manifest(backend, full, manifest)
    pending = len(todo) - len(copied) + int(listing.get("open", 0))
    copied += [r for r in came if r not in copied]
    _said(progress, full, local, copied, kept)
    remember_pass(backend, full, tag, pending, over)
    return SyncResult(full, local, tuple(copied), pending, "rsync" if use_rsync else "sftp", tuple(kept))


async def sync_all(
    backend: Backend, *, progress: Progress = quiet, only: Sequence[str] | None = None, strict: bool = False
) -> list[SyncResult]:
    """`sync` without a job: every job with a sync dir on a running box (or on the boxes
    whose ids are in `only`).

    One box or job that fails must not keep the others' results from coming home: it is
    skipped (said through `progress`), and an error is raised only when nothing at all
    could be pulled, or, with `strict`, after the others came home. Without `only`, boxes
    cloudsh did not launch are left alone (`ops.owners`).
    """
    results = []
    failed: list[tuple[str, CloudshError]] = []
    insts = await backend.ec2.list_instances()
    for inst in own(insts) if only is None else insts:
        tags = {j: t for j, t in job_tags(inst).items() if t.remote_dir}
        if not tags or inst.state != "running" or (only is not None and inst.id not in only):
            continue
        try:
            host = await ssh_host(backend, inst)
        except CloudshError as exc:
            failed.append((inst.label, exc))
            continue
        for jid, tag in tags.items():
            try:
                results.append(await sync_job(backend, jid, progress=progress, _located=(inst, tag, host)))
            except CloudshError as exc:
                failed.append((jid, exc))
    if failed and (strict or not results) and len(failed) == 1:
        raise failed[0][1]
    for what, error in failed:
        progress(f"{what}: results not pulled: {error}")
    if failed and (strict or not results):
        raise CloudshError(f"{len(failed)} jobs' results did not all come home (each said above)",
                           "fix what each says, then run `cloudsh sync` again")
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
    goes; then record how it ended in its tag. Raises if the last pull failed."""
    inst, tag = await find_job(backend, job_id)
    full = full_id(inst, job_id)
    host = await ssh_host(backend, inst)
    await install_agent(backend, host)
    done = asyncio.Event()
    ended = False  # the log stream ended with the job (not with the connection)

    async def tail() -> None:
        nonlocal ended
        try:
            await backend.ssh.run(host, f"python3 {AGENT_PATH} logs {full} --follow", on_stdout=on_output)
            ended = True
        except CloudshError as exc:
            progress(f"log stream ended: {exc}")
        finally:
            done.set()

    last_error = ""

    async def pull() -> None:
        nonlocal last_error
        try:
            result = await sync_job(backend, full, over=ended, _located=(inst, tag, host))
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
    job = pick_job(await record_states(backend, only=[inst.id]), full, job_id)
    if last_error:
        raise CloudshError(
            f"job {full} is {job.state}, but its last results did not come home: {last_error}",
            f"fix that, then run `cloudsh sync {full}`",
        )
    return job


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
        files = _listed(listing) if listing.get("files") else []
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
