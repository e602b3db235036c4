#!/usr/bin/env python3
"""The idle stop on a box: powers the box off once nothing has used it for a while.

Installed as `~/.cloudsh/idle/agent.py` by `ops.idle` (at launch and by `cloudsh idle NAME
AFTER`), started at once and by cron at each boot (`@reboot`). Its settings are
`config.json` beside it; each check reads them again, so `cloudsh idle NAME 2h` changes or
snoozes a running agent. Each check writes `status.json`, which `cloudsh idle NAME` shows.

What keeps the box awake (each named in `awake_because`):

- an SSH terminal with a keystroke in the last AFTER (the tty's access time, as `w`
  computes IDLE); a forgotten session with no keystrokes does not count;
- a process using CPU (`busy_cpu`, 5 % of one CPU, or more between two checks): a busy
  program in tmux, a build, a training run;
- a cloudsh job running (`~/.cloudsh/jobs/*/state.json`);
- a Jupyter kernel busy, or active in the last AFTER (Jupyter's REST API `/api/kernels`,
  found through the servers' runtime files `jpserver-*.json`, with their token);
- GPU utilisation of `busy_gpu` % or more (`nvidia-smi`) on a box with GPUs;
- a process whose command line contains a `keep_alive` pattern.

A signal it cannot read (a Jupyter server that refuses its token, a GPU box without a
working `nvidia-smi`) counts as busy and says why: it never stops a box it cannot judge.

`warn_s` before it stops, it writes a warning to every terminal of the user on the box.
It stops the box with `sudo shutdown -h now`: on EC2 an EBS-backed box then stops (its
instance-initiated shutdown behaviour is `stop` by default, "Change the instance initiated
shutdown behavior", EC2 user guide).

Usage: `agent.py run` (the loop), `agent.py status` (the last check, JSON),
`agent.py configure JSON` (write settings, (re)start or end the loop, keep cron's line).

Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, "config.json")
STATUS = os.path.join(HERE, "status.json")
PIDFILE = os.path.join(HERE, "agent.pid")
JOBS = os.path.expanduser("~/.cloudsh/jobs")
CRON_MARK = ".cloudsh/idle/agent.py"
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: (what, when it was last active as a UNIX time) - "when" is now for what is busy now.
Signal = tuple[str, float]


def load(path: str, default: Any) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save(path: str, doc: Any) -> None:
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


# -- the signals ----------------------------------------------------------------------------


def terminals() -> list[str]:
    """This user's terminals (/dev/pts/N)."""
    out = []
    for path in glob.glob("/dev/pts/[0-9]*"):
        with contextlib.suppress(OSError):
            if os.stat(path).st_uid == os.getuid():
                out.append(path)
    return sorted(out)


def ssh_sessions(now: float, after: float) -> list[Signal]:
    found = []
    for path in terminals():
        with contextlib.suppress(OSError):
            typed = os.stat(path).st_atime  # updated when the session reads a keystroke
            if now - typed < after:
                found.append((f"ssh session on {path[5:]} active {ago(now - typed)} ago", typed))
    return found


def cpu_times() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds so far) for every process but this one."""
    out = {}
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d[6:])
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"{d}/stat") as f:
                text = f.read()
            name = text[text.index("(") + 1:text.rindex(")")]
            fields = text[text.rindex(")") + 2:].split()
            out[pid] = (name, (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def busy_processes(before: dict[int, tuple[str, float]], now_times: dict[int, tuple[str, float]],
                   span: float, share: float, now: float) -> list[Signal]:
    found = []
    for pid, (name, used) in now_times.items():
        if pid in before and span > 0:
            load_ = (used - before[pid][1]) / span
            if load_ >= share:
                found.append((f"process {name} (pid {pid}) busy at {load_:.0%} CPU", now))
    return found


def jobs_running(now: float) -> list[Signal]:
    found = []
    for path in glob.glob(os.path.join(JOBS, "*", "state.json")):
        st = load(path, {})
        if st.get("state") == "running" and alive(st.get("pid")):
            found.append((f"cloudsh job {os.path.basename(os.path.dirname(path))} running", now))
    return found


def alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def jupyter_dirs() -> list[str]:
    env = os.environ.get("JUPYTER_RUNTIME_DIR")
    return [env] if env else [os.path.expanduser("~/.local/share/jupyter/runtime")]


def jupyter_kernels(now: float, after: float) -> list[Signal]:
    """Kernels busy, or active in the last `after`, of every running Jupyter server."""
    found = []
    for d in jupyter_dirs():
        for path in sorted(glob.glob(os.path.join(d, "jpserver-*.json")) + glob.glob(os.path.join(d, "nbserver-*.json"))):
            info = load(path, None)
            if not isinstance(info, dict) or not alive(info.get("pid")):
                continue  # a runtime file its server left behind
            url = str(info.get("url", "")).rstrip("/") + "/api/kernels"
            try:
                kernels = read_kernels(url, str(info.get("token", "")))
            except (OSError, ValueError) as e:
                found.append((f"jupyter server {info.get('url', path)} unreadable ({e}); counted as busy", now))
                continue
            for k in kernels:
                name = k.get("name", "kernel")
                if k.get("execution_state") == "busy":
                    found.append((f"jupyter kernel {name} busy", now))
                    continue
                last = parse_time(str(k.get("last_activity", "")))
                if last is None:
                    found.append((f"jupyter kernel {name}: no last activity; counted as busy", now))
                elif now - last < after:
                    found.append((f"jupyter kernel {name} active {ago(now - last)} ago", last))
    return found


def read_kernels(url: str, token: str) -> list[dict[str, Any]]:
    if not token:
        raise ValueError("its runtime file has no token")
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        doc = json.loads(r.read())
    if not isinstance(doc, list):
        raise ValueError("not a list of kernels")
    return [k for k in doc if isinstance(k, dict)]


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def gpu_busy(now: float, share: float) -> list[Signal]:
    argv = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
        values = [float(v) for v in r.stdout.split()] if r.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        return [(f"GPU utilisation unreadable ({e}); counted as busy", now)]
    if not values:
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        return [(f"GPU utilisation unreadable (nvidia-smi: {why}); counted as busy", now)]
    return [(f"GPU {i} at {v:g} %", now) for i, v in enumerate(values) if v >= share]


def kept_alive(patterns: list[str], now: float) -> list[Signal]:
    found: list[Signal] = []
    if not patterns:
        return found
    for d in glob.glob("/proc/[0-9]*"):
        if d == f"/proc/{os.getpid()}":
            continue
        with contextlib.suppress(OSError):
            with open(f"{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if "idle/agent.py" in cmd:
                continue  # this agent, or the command that set its patterns
            for p in patterns:
                if p and p in cmd:
                    found.append((f"process {d[6:]} matches keep-alive {p!r}", now))
    return found


# -- the loop ------------------------------------------------------------------------------


def warn_terminals(text: str) -> None:
    """Write `text` to every terminal of this user, as `wall` does."""
    for path in terminals():
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                os.write(fd, f"\r\n\a*** {text} ***\r\n".encode())
            finally:
                os.close(fd)


def check(cfg: dict[str, Any], before: dict[int, tuple[str, float]], span: float) -> tuple[list[Signal], dict[int, tuple[str, float]]]:
    now = time.time()
    after = float(cfg["after_s"])
    times = cpu_times()
    found = ssh_sessions(now, after) + busy_processes(before, times, span, float(cfg.get("busy_cpu", 0.05)), now)
    found += jobs_running(now) + jupyter_kernels(now, after) + kept_alive(list(cfg.get("keep_alive", [])), now)
    if cfg.get("gpu"):
        found += gpu_busy(now, float(cfg.get("busy_gpu", 5)))
    return found, times


def agent_alive(pid: Any) -> bool:
    """`pid` is this agent's loop (not another process that got its number after a reboot)."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return b"idle/agent.py" in f.read()
    except (OSError, TypeError, ValueError):
        return False


def run() -> int:
    if agent_alive(load(PIDFILE, 0)) and load(PIDFILE, 0) != os.getpid():
        return 0  # one loop per box
    save(PIDFILE, os.getpid())
    started = last_busy = time.time()
    before: dict[int, tuple[str, float]] = {}
    checked = time.monotonic()
    warned = warned_at = 0.0  # the idle period last warned about (its last_busy), and when
    while True:
        cfg = load(CONFIG, {})
        if cfg.get("after_s") is None:
            save(STATUS, {"after_s": None, "checked_at": time.time()})
            return 0
        span, checked = time.monotonic() - checked, time.monotonic()
        found, before = check(cfg, before, span)
        now = time.time()
        last_busy = max([last_busy, float(cfg.get("since", 0)), started, *(t for _, t in found)])
        after = float(cfg["after_s"])
        idle_for = now - last_busy
        status = {"after_s": after, "idle_for_s": round(idle_for, 1), "awake_because": [w for w, _ in found],
                  "stops_at": last_busy + after, "checked_at": now, "pid": os.getpid()}
        if warned == last_busy:
            status["warned_at"] = warned_at
        if idle_for >= after and warned == last_busy:  # never a stop without its warning first
            status["stopping"] = True
            save(STATUS, status)
            r = subprocess.run(["sudo", "shutdown", "-h", "now"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                status["error"] = f"shutdown failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
                save(STATUS, status)
        else:
            left = max(0.0, after - idle_for)
            if left <= float(cfg.get("warn_s", 600)) and warned != last_busy:
                warned, warned_at = last_busy, now
                name = cfg.get("name") or "this box"
                warn_terminals(f"cloudsh: {name} has been idle for {ago(idle_for)} and stops in {ago(left)}; "
                               f"`cloudsh idle {name} 2h` keeps it up")
                status["warned_at"] = now
            save(STATUS, status)
        time.sleep(max(1.0, float(cfg.get("interval_s", 60))))


def status() -> int:
    cfg = load(CONFIG, {})
    st = load(STATUS, {})
    running = agent_alive(load(PIDFILE, 0))
    after = cfg.get("after_s")
    if after is not None and "stops_at" in st:  # the last check, under the settings of now
        last_busy = max(float(st["stops_at"]) - float(st["after_s"]), float(cfg.get("since", 0)))
        st["stops_at"] = last_busy + float(after)
    print(json.dumps({**st, "after_s": after, "keep_alive": cfg.get("keep_alive", []),
                      "running": bool(running), "now": time.time()}))
    return 0


def configure(doc: dict[str, Any]) -> int:
    """Write the settings, start the loop (or end it when off) and keep cron's `@reboot` line."""
    cfg = {**load(CONFIG, {}), **doc, "since": time.time()}
    save(CONFIG, cfg)
    on = cfg.get("after_s") is not None
    lines = []
    with contextlib.suppress(OSError):
        r = subprocess.run(["crontab", "-l"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        lines = [x for x in r.stdout.splitlines() if CRON_MARK not in x] if r.returncode == 0 else []
    if on:
        lines.append(f"@reboot python3 $HOME/{CRON_MARK} run")
    with contextlib.suppress(OSError):
        subprocess.run(["crontab", "-"], input="".join(x + "\n" for x in lines), text=True, check=False)
    pid = load(PIDFILE, 0)
    if not on:
        if agent_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGTERM)
    elif not agent_alive(pid):
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "run"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        )
    print(json.dumps({"ok": True, "after_s": cfg.get("after_s")}))
    return 0


def main(argv: list[str]) -> int:
    if argv == ["run"]:
        return run()
    if argv == ["status"]:
        return status()
    if len(argv) == 2 and argv[0] == "configure":
        return configure(json.loads(argv[1]))
    sys.stderr.write("usage: agent.py run | status | configure JSON\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
