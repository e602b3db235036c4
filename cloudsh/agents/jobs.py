#!/usr/bin/env python3
"""cloudsh job agent: runs one job detached on this box and watches for spot interruptions.

Copied by cloudsh to `~/.cloudsh/jobs/agent.py` on the box and run there with the box's
`python3`: standard library only, nothing from cloudsh. Every subcommand but `logs` and
`supervise` prints one JSON document:

    status [ID...]              every job's state (state.json plus the log's last lines)
    start ID [--spec JSON] [--resume]
                                start the supervisor detached (setsid) and wait for it;
                                a new job also gets the crontab's `@reboot` line for `boot`
    boot                        (at each boot, from cron) resume the jobs an interruption
                                stopped, with CLOUDSH_RESUME=1: no laptop needed
    supervise ID [--resume]     (the detached supervisor itself) run the script, poll the
                                spot interruption notice, record the end
    list DIR                    files under DIR not held open for writing, for the copy home
    exclude DIR NAME            the files under DIR held open for writing, as rsync exclusion
                                patterns in ~/.cloudsh/jobs/.open-NAME; answers how many
    logs ID [--follow]          the job's output (followed until the supervisor exits)
    stop ID [--wait S] [--pause]
                                SIGTERM the script's process group, wait for the end;
                                `--pause` records it as interrupted (resumed at next boot)

Each job lives in `~/.cloudsh/jobs/<id>/`: the script, `job.json` (what to run),
`log`, `state.json` (running / finished / interrupted / stopped, exit status, times).
"""

from __future__ import annotations

import os
import sys
import time

# Other modules are imported where used: `exclude` runs before every copy home, and on a
# box it starts in a third of the time without them (typing is for type checkers only).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HOME = os.path.expanduser("~")
JOBS = os.path.join(HOME, ".cloudsh", "jobs")
#: Seconds between two looks at the spot interruption notice (EC2 gives two minutes).
POLL_S = 5.0
#: Instance metadata (IMDSv2); sandbox boxes are given their own address.
IMDS = os.environ.get("CLOUDSH_IMDS_ENDPOINT", "http://169.254.169.254").rstrip("/")
#: Directories the copy home leaves alone (rsync's partial files).
PARTIAL_DIR = ".cloudsh-partial"
#: The crontab line that resumes interrupted jobs when the box boots again.
BOOT_LINE = '@reboot python3 "$HOME/.cloudsh/jobs/agent.py" boot >/dev/null 2>&1'
CRONTAB = "crontab"

if TYPE_CHECKING:  # a runtime alias would need Python 3.9; boxes may have 3.8
    State = dict[str, Any]


def jobdir(jid: str) -> str:
    return os.path.join(JOBS, jid)


def read_json(path: str, default: Any = None) -> Any:
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def write_json(path: str, data: Any) -> None:
    """Atomically, and on disk before it counts: a box may lose power right after."""
    import json

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_supervisor(pid: Any, jid: str) -> bool:
    """Whether `pid` is alive and is this job's supervisor (pids are reused after a reboot)."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, TypeError, ValueError):
        return False
    return b"supervise" in argv and jid.encode() in argv


def tail(path: str, n: int) -> list[str]:
    """The last `n` non-blank lines of the file (read from its last 4 KiB)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-n:]


def status(jid: str) -> State:
    d = jobdir(jid)
    st = read_json(os.path.join(d, "state.json"))
    if st is None:
        return {"state": "lost" if os.path.isdir(d) else "missing"}
    if st.get("state") == "running" and not is_supervisor(st.get("pid"), jid):
        st["state"] = "lost"  # the box restarted under it, or it was killed
    st["tail"] = tail(os.path.join(d, "log"), 3)
    return dict(st)


def records() -> dict[str, str]:
    """Job records moved off the box's EC2 tags (`archive`), by job id."""
    return dict(read_json(os.path.join(JOBS, "records.json"), {}) or {})


def archive(moving_text: str) -> State:
    """Keep the records of jobs whose EC2 tags are about to go."""
    import fcntl
    import json

    moving = json.loads(moving_text)
    os.makedirs(JOBS, exist_ok=True)
    with open(os.path.join(JOBS, "records.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several front ends may move records at once
        write_json(os.path.join(JOBS, "records.json"), {**records(), **moving})
    return {"ok": True, "archived": sorted(moving)}


def all_ids() -> list[str]:
    if not os.path.isdir(JOBS):
        return []
    return sorted(x for x in os.listdir(JOBS) if os.path.isdir(jobdir(x)))


# -- the spot interruption notice ------------------------------------------------------------


def imds(method: str, path: str, headers: dict[str, str]) -> str:
    import urllib.request

    req = urllib.request.Request(IMDS + path, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    with opener.open(req, timeout=1.0) as r:
        return str(r.read().decode())


def notice(token: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the instance-action document, or None while there is none; the token to reuse).

    A 404 is the normal answer (no notice): the token is kept. A 401 means the token
    expired: a new one is asked for next time. Any other failure drops the token too.
    """
    import json
    import urllib.error

    try:
        if token is None:
            token = imds("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        body = imds("GET", "/latest/meta-data/spot/instance-action", {"X-aws-ec2-metadata-token": token})
        action = json.loads(body)
    except urllib.error.HTTPError as e:
        return None, (None if e.code == 401 else token)
    except (OSError, ValueError):
        return None, None
    return (action if isinstance(action, dict) else None), token


# -- running the job ----------------------------------------------------------------------------


def time_before(prev: State) -> float:
    """Seconds the job ran in its earlier runs (a resumed job's runtime adds up)."""
    before = float(prev.get("before_s", 0.0))
    if prev.get("started"):
        end = prev.get("ended") or prev.get("noticed") or prev["started"]
        before += max(0.0, float(end) - float(prev["started"]))
    return before


def job_env(jid: str, spec: State, resume: bool) -> dict[str, str]:
    d = jobdir(jid)
    env = dict(os.environ)
    env.pop("CLOUDSH_RESUME", None)
    env.update(spec.get("env", {}))
    env.update(
        CLOUDSH_JOB_ID=jid,
        CLOUDSH_JOB_DIR=d,
        CLOUDSH_INTERRUPT_FILE=os.path.join(d, "interrupted"),
        CLOUDSH_SYNC_DIR=spec.get("sync_dir", ""),
    )
    if resume:
        env["CLOUDSH_RESUME"] = "1"
    return env


def end_state(state: State, returncode: int, interrupted: bool, stop_requested: bool) -> State:
    """The record once the script exited (a signal's death is reported as 128 + signal)."""
    ended = dict(state, ended=time.time(), exit=128 - returncode if returncode < 0 else returncode)
    if not interrupted:
        ended["state"] = "stopped" if stop_requested else "finished"
    return ended


def on_notice(state: State, action: dict[str, Any], marker: str) -> State:
    """Write the marker the script may watch for and record the interruption."""
    import json

    with open(marker, "w") as f:
        f.write(json.dumps(action) + "\n")
    return dict(state, state="interrupted", noticed=time.time(), notice=action)


def supervise(jid: str, resume: bool) -> None:
    import contextlib
    import signal
    import subprocess

    d = jobdir(jid)
    spec = read_json(os.path.join(d, "job.json"))
    prev = read_json(os.path.join(d, "state.json"), {}) or {}
    marker = os.path.join(d, "interrupted")
    stop_file = os.path.join(d, "stop-requested")
    pause_file = os.path.join(d, "pause-requested")
    for name in (marker, stop_file, pause_file):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    log = open(os.path.join(d, "log"), "ab")  # noqa: SIM115 (held for the child's lifetime)
    if resume:
        log.write(b"[cloudsh] resuming with CLOUDSH_RESUME=1\n")
        log.flush()
    state: State = {
        "id": jid, "state": "running", "pid": os.getpid(), "started": time.time(),
        "runs": int(prev.get("runs", 0)) + 1, "before_s": time_before(prev), "script": spec["script"],
    }
    sp = os.path.join(d, "state.json")
    try:
        child = subprocess.Popen(
            [os.path.join(d, spec["script"])], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, cwd=HOME, env=job_env(jid, spec, resume), start_new_session=True,
        )
    except OSError as e:
        log.write(f"[cloudsh] cannot run {spec['script']}: {e}\n".encode())
        state.update(state="finished", exit=126, ended=time.time())
        write_json(sp, state)
        return
    state["child"] = child.pid
    write_json(sp, state)
    token: str | None = None
    next_poll, interrupted = 0.0, False
    while child.poll() is None:
        now = time.monotonic()
        if not interrupted and now >= next_poll:
            next_poll = now + POLL_S
            action, token = notice(token)
            if action:
                interrupted = True
                state = on_notice(state, action, marker)
                write_json(sp, state)
                log.write(
                    f"\n[cloudsh] spot interruption notice ({action.get('action')} at "
                    f"{action.get('time')}): sending SIGTERM\n".encode()
                )
                log.flush()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
                os.sync()
        time.sleep(0.1)
    os.sync()
    if not interrupted and os.path.exists(pause_file):
        interrupted = True
        state = dict(state, state="interrupted", noticed=time.time())
    write_json(sp, end_state(state, child.returncode, interrupted, os.path.exists(stop_file)))
    log.close()


def prepare(jid: str, spec: State) -> State | None:
    """Check and record a new job's spec; an error answer, or None when it is ready."""
    d = jobdir(jid)
    hint = "pick a dir under the home directory, or make it writable first"
    sync_dir = spec.get("sync_dir") or ""
    if sync_dir:
        sync_dir = os.path.abspath(os.path.join(HOME, os.path.expanduser(sync_dir)))
        try:
            os.makedirs(sync_dir, exist_ok=True)
        except OSError as e:
            return {"ok": False, "error": f"cannot create sync dir {sync_dir} on the box: {e.strerror}", "hint": hint}
        if not os.access(sync_dir, os.W_OK | os.X_OK):
            return {"ok": False, "error": f"sync dir {sync_dir} on the box is not writable", "hint": hint}
    spec["sync_dir"] = sync_dir
    if not os.access(os.path.join(d, spec["script"]), os.X_OK):
        return {"ok": False, "error": "the uploaded script is not executable on the box", "hint": ""}
    write_json(os.path.join(d, "job.json"), spec)
    return None


def start(jid: str, spec_text: str | None, resume: bool) -> State:
    import json
    import subprocess

    d = jobdir(jid)
    if spec_text is not None:
        refused = prepare(jid, json.loads(spec_text))
        if refused is not None:
            return refused
        ensure_boot_hook()
    spec = read_json(os.path.join(d, "job.json"))
    if spec is None:
        return {"ok": False, "error": f"job {jid} has no files on this box",
                "hint": "its disk was replaced; start the script again"}
    st = status(jid) if os.path.exists(os.path.join(d, "state.json")) else {}
    if st.get("state") == "running" or (st.get("pid") and is_supervisor(st.get("pid"), jid)):
        return {"ok": False, "error": f"job {jid} is still running", "hint": ""}
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
    return {"ok": False, "error": "the job supervisor did not start", "hint": f"see ~/.cloudsh/jobs/{jid}/log"}


def ensure_boot_hook() -> None:
    """Put `BOOT_LINE` in the user's crontab (once), so a box restarted by EC2 after an
    interruption resumes its jobs by itself. Without cron the jobs wait for `job resume`."""
    import subprocess

    try:
        now = subprocess.run([CRONTAB, "-l"], capture_output=True, text=True, timeout=10)
        lines = now.stdout.splitlines() if now.returncode == 0 else []
        if BOOT_LINE not in lines:
            subprocess.run([CRONTAB, "-"], input="\n".join([*lines, BOOT_LINE]) + "\n",
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pass


def boot() -> State:
    """Resume, with CLOUDSH_RESUME=1, every job an interruption (or a move) stopped."""
    resumed = {}
    for jid in all_ids():
        st = read_json(os.path.join(jobdir(jid), "state.json"), {}) or {}
        if st.get("state") == "interrupted" and os.path.exists(os.path.join(jobdir(jid), "job.json")):
            resumed[jid] = bool(start(jid, None, True).get("ok"))
    return resumed


def stop(jid: str, wait_s: float, pause: bool = False) -> State:
    import contextlib
    import json
    import signal

    d = jobdir(jid)
    st = read_json(os.path.join(d, "state.json"), {}) or {}
    if st.get("state") != "running" or not is_supervisor(st.get("pid"), jid):
        return status(jid)
    if pause:  # the script sees the same marker as for a spot notice
        with open(os.path.join(d, "interrupted"), "w") as f:
            f.write(json.dumps({"action": "move", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    open(os.path.join(d, "pause-requested" if pause else "stop-requested"), "w").close()
    with contextlib.suppress(ProcessLookupError, KeyError, ValueError):
        os.killpg(int(st["child"]), signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and is_supervisor(st.get("pid"), jid):
        time.sleep(0.1)
    return status(jid)


# -- results and output -----------------------------------------------------------------------


def open_for_write() -> set[str]:
    """Paths some process on the box holds open for writing (not yet safe to copy)."""
    me, out = str(os.getpid()), set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if not target.startswith("/"):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    flags = next((int(line.split()[1], 8) for line in f if line.startswith("flags:")), 0)
            except (OSError, ValueError, IndexError):
                continue
            if flags & 3:  # O_WRONLY or O_RDWR
                out.add(target)
    return out


def listing(path: str) -> State:
    """Regular files under `path` (relative to home): [relative path, size, mtime in ns].
    Names are as the filesystem holds them (bytes that are not UTF-8 as surrogate escapes,
    which `json.dumps` writes as \\udcXX)."""
    root = os.path.realpath(os.path.join(HOME, os.path.expanduser(path)))
    import shutil

    has_rsync = bool(shutil.which("rsync"))
    if not os.path.isdir(root):
        return {"dir": root, "files": [], "rsync": has_rsync}
    busy = open_for_write()
    files: list[list[Any]] = []
    still_open = 0
    # scandir's entry types need no stat: one lstat per regular file (5,000 files: 0.1 s).
    todo = [(root, "")]
    while todo:
        directory, rel = todo.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = rel + entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.name != PARTIAL_DIR:
                    todo.append((entry.path, name + "/"))
            elif entry.is_file(follow_symlinks=False):
                if entry.path in busy:
                    still_open += 1
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                files.append([name, st.st_size, st.st_mtime_ns])
    return {"dir": root, "files": files, "open": still_open, "rsync": has_rsync}


#: A file list a pass left behind, older than this, belongs to a pass that ended long ago.
LIST_KEEP_S = 600.0


def rsync_rule(rel: str) -> str:
    """An rsync exclusion pattern for exactly the file `rel` (anchored at the copy's top):
    with one of rsync's wildcards in the name, every wildcard and backslash is escaped."""
    if any(c in rel for c in "*?["):
        rel = "".join("\\" + c if c in "*?[\\" else c for c in rel)
    return "/" + rel


def exclusions(path: str, name: str) -> int:
    """Write the files under `path` that some process holds open for writing to `.open-NAME`
    beside the jobs, as rsync exclusion patterns (NUL-separated), read by rsync on this box
    (`--exclude-from`) so a copy home never takes a file half written; drop file lists old
    passes left. Returns how many are open."""
    for old in os.listdir(JOBS) if os.path.isdir(JOBS) else []:
        stale = os.path.join(JOBS, old)
        try:
            if old.startswith(".files-") and time.time() - os.stat(stale).st_mtime > LIST_KEEP_S:
                os.unlink(stale)
        except OSError:
            pass
    root = os.path.realpath(os.path.join(HOME, os.path.expanduser(path))).rstrip("/") + "/"
    rules = [rsync_rule(p[len(root):]) for p in sorted(open_for_write()) if p.startswith(root)]
    target = os.path.join(JOBS, ".open-" + os.path.basename(name))
    # Through a temporary name: another pass of the same job may be reading the last one.
    with open(f"{target}.{os.getpid()}", "wb") as f:
        f.write(b"\0".join(os.fsencode(r) for r in rules))
    os.replace(f"{target}.{os.getpid()}", target)
    return len(rules)


def open_under(path: str) -> list[str]:
    """Files under `path` (a mount point, say) that some process holds open for writing."""
    root = os.path.realpath(os.path.expanduser(path)).rstrip("/") + "/"
    return sorted(p for p in open_for_write() if p.startswith(root))


def logs(jid: str, follow: bool, out: Any = None) -> None:
    """Copy the job's log to `out` (stdout); with `follow`, until its supervisor exits."""
    out = out if out is not None else sys.stdout.buffer
    d = jobdir(jid)
    try:
        f = open(os.path.join(d, "log"), "rb")  # noqa: SIM115 (closed below)
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


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: agent.py status|start|boot|supervise|list|exclude|open|logs|stop|archive ...", file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "exclude":  # before every copy home: answered without importing json
        print(f'{{"open":{exclusions(args[0], args[1])}}}')
        return 0
    import json

    answer: Any
    if cmd == "supervise":
        supervise(args[0], "--resume" in args)
        return 0
    if cmd == "logs":
        logs(args[0], "--follow" in args)
        return 0
    if cmd == "start":
        answer = start(args[0], _option(args, "--spec"), "--resume" in args)
    elif cmd == "status":
        answer = {jid: status(jid) for jid in (args or all_ids())}
        for jid, record in records().items():
            if jid in answer:
                answer[jid]["record"] = record
    elif cmd == "archive":
        answer = archive(args[0])
    elif cmd == "list":
        answer = listing(args[0])
    elif cmd == "open":
        answer = open_under(args[0])
    elif cmd == "stop":
        answer = stop(args[0], float(_option(args, "--wait") or 15.0), "--pause" in args)
    elif cmd == "boot":
        answer = boot()
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    print(json.dumps(answer, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
