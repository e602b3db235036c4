"""Run the real `cloudsh` program as a user would, on the session's sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any


def ctrl_c_reaches_it() -> None:
    """`preexec_fn` for a program a test interrupts: SIGINT as a terminal delivers it, even
    when the test itself runs where SIGINT is ignored (a background job of a script)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cloudsh(*args: str, env: dict[str, str] | None = None, timeout: float = 180, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CLOUDSH_SANDBOX": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cloudsh", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def ok(*args: str, **kw: Any) -> str:
    r = cloudsh(*args, **kw)
    assert r.returncode == 0, f"cloudsh {' '.join(args)} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def ls_json(*extra: str) -> list[dict[str, Any]]:
    return json.loads(ok("ls", "--json", *extra))  # type: ignore[no-any-return]


def by_name(name: str, *extra: str) -> dict[str, Any] | None:
    return next((r for r in ls_json(*extra) if r["name"] == name), None)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command: exactly one line, no traceback."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    return lines[0]
