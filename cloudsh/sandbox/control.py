"""Start, stop and inspect the sandbox daemon (`cloudsh sandbox up|down|status|env`).

The daemon runs in the background in its own session, writes its log to
`<sandbox_dir>/daemon.log` and publishes its endpoint and instances in `state.json`.
A lock file makes concurrent `sandbox_up` calls start one daemon, not two.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudsh.config import Settings
from cloudsh.errors import SandboxError
from cloudsh.sandbox.state import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    STATE_FILE,
    SandboxState,
    pid_alive,
    read_state,
)

PORT_ENV = "CLOUDSH_SANDBOX_PORT"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.05

#: Daemons this process started: reaped here so a stopped one is not mistaken for alive.
_children: dict[int, subprocess.Popen[bytes]] = {}


def sandbox_env(state: SandboxState) -> dict[str, str]:
    """Environment that points cloudsh, the AWS CLI and boto3 at this sandbox."""
    return {
        "AWS_ENDPOINT_URL": state.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": state.region or REGION,
        "CLOUDSH_SANDBOX": "1",
    }


def sandbox_request(settings: Settings, path: str, doc: dict[str, Any] | None = None, what: str = "it") -> Any:
    """Ask the running daemon through one of its `/_sandbox/...` control paths (imds.py):
    POST `doc` as JSON, or GET when it is None. Returns the decoded JSON answer; a refusal
    is a `SandboxError` saying "the sandbox refused {what}: why"."""
    state = sandbox_status(settings)
    if state is None or not state.imds_endpoint:
        raise SandboxError("the sandbox is not running", "start it with `cloudsh sandbox up`")
    body = json.dumps(doc).encode() if doc is not None else None
    req = urllib.request.Request(
        f"{state.imds_endpoint}{path}", data=body, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        why = exc.read().decode(errors="replace").strip() or exc.reason
        raise SandboxError(f"the sandbox refused {what}: {why}", "") from None
    except (OSError, ValueError) as exc:
        raise SandboxError(f"cannot reach the sandbox daemon: {exc}", "check `cloudsh sandbox status`") from None


def sandbox_status(settings: Settings) -> SandboxState | None:
    """The running sandbox's state, or None; a state.json left by a dead daemon is removed."""
    directory = settings.sandbox_path
    state = read_state(directory)
    if state is None:
        return None
    if not _alive(state.pid):
        _remove(directory / STATE_FILE)
        return None
    return state


def sandbox_up(settings: Settings) -> SandboxState:
    """Start the sandbox daemon unless one already answers; return its published state."""
    directory = settings.sandbox_path
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        state = sandbox_status(settings)
        if state is not None:
            if _answers(state.endpoint):
                return state
            _stop(directory, state.pid)  # alive but deaf: replace it
        return _start(settings, directory)


def sandbox_down(settings: Settings) -> bool:
    """Stop the daemon and everything it started; True if one was running."""
    directory = settings.sandbox_path
    if not directory.is_dir():
        return False
    with _locked(directory):
        state = read_state(directory)
        pid = state.pid if state is not None else _read_pid(directory)
        was_running = pid is not None and _alive(pid)
        if pid is not None and was_running:
            _stop(directory, pid)
        _remove(directory / STATE_FILE)
        _remove(directory / "daemon.pid")
        return was_running


# -- internals ----------------------------------------------------------------------------


def _start(settings: Settings, directory: Path) -> SandboxState:
    port = _choose_port(directory)
    log_path = directory / "daemon.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [
        sys.executable, "-m", "cloudsh.sandbox.daemon",
        "--dir", str(directory), "--port", str(port),
        "--boot-s", str(settings.sandbox_boot_s),
        "--consistency-s", str(settings.sandbox_consistency_s),
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, env=env, cwd=str(directory),
        )
    _children[proc.pid] = proc
    (directory / "daemon.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _children.pop(proc.pid, None)
            _remove(directory / "daemon.pid")
            raise SandboxError(
                f"the sandbox did not start: {_last_log_line(log_path, log_start)}",
                _hint_for(_last_log_line(log_path, log_start), log_path),
            )
        state = read_state(directory)
        if state is not None and state.pid == proc.pid and _answers(state.endpoint):
            return state
        time.sleep(POLL_S)
    _stop(directory, proc.pid)
    raise SandboxError(
        f"the sandbox did not answer within {START_TIMEOUT_S:.0f} s",
        f"see {log_path}",
    )


def _choose_port(directory: Path) -> int:
    """CLOUDSH_SANDBOX_PORT, else last run's port if free, else 0 (the daemon picks one)."""
    asked = os.environ.get(PORT_ENV, "").strip()
    if asked:
        try:
            port = int(asked)
        except ValueError:
            raise SandboxError(
                f"{PORT_ENV}={asked!r} is not a port number", f"set {PORT_ENV} to a free port"
            ) from None
        if not _port_free(port):
            raise SandboxError(
                f"port {port} is in use",
                f"set {PORT_ENV} to a free port or stop what uses it",
            )
        return port
    with contextlib.suppress(OSError, ValueError):
        previous = int((directory / "port").read_text().strip())
        if _port_free(previous):
            return previous
    return 0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the daemon's server uses, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(endpoint: str) -> bool:
    """Any HTTP answer from moto counts; a refused or silent port does not."""
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    # A cheap page: /moto-api/data.json dumps the whole cloud (0.4 s with 300 boxes), and
    # a daemon that is merely slow must never be taken for deaf and replaced.
    conn = http.client.HTTPConnection(host or "127.0.0.1", int(port or 80), timeout=5.0)
    try:
        conn.request("GET", "/moto-api/")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    if not pid_alive(pid):
        return False
    # A zombie answers kill(0) but is dead for our purposes.
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _stop(directory: Path, pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(POLL_S)
    # The daemon leads its own process group; anything still in it goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(POLL_S)


def _read_pid(directory: Path) -> int | None:
    try:
        return int((directory / "daemon.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _last_log_line(log_path: Path, start: int) -> str:
    """The last meaningful line the daemon logged, without its timestamp and logger name."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return "no log was written"
    for line in reversed(lines):
        line = line.strip()
        if not line or line.startswith(("Traceback", "File ", "^")):
            continue
        return line.split(": ", 1)[1] if " ERROR " in line or " WARNING " in line else line
    return "it exited without a message"


def _hint_for(line: str, log_path: Path) -> str:
    if "in use" in line:
        return f"set {PORT_ENV} to a free port or stop what uses it"
    return f"see {log_path}"

