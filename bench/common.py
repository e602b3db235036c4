"""Shared bench plumbing: a private sandbox per bench, and timing helpers.

Benchmarks print ratios against a peer run in the same process tree (the AWS CLI,
OpenSSH); they assert nothing and are never part of the test suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@contextmanager
def bench_sandbox(boot_s: float = 0.3, timing: str = "short", ssh_cipher: str = "") -> Iterator[dict[str, str]]:
    """A fresh sandbox and cloudsh home in a temp dir (removed at the end, with whatever a
    bench put under `bench_dir(env)`); yields the environment to use.
    `ssh_cipher`: the one cipher the boxes' SSH servers offer (CLOUDSH_SANDBOX_SSH_CIPHER)."""
    tmp = Path(tempfile.mkdtemp(prefix="cloudsh-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDSH_"))}
    env.update(
        HOME=str(tmp / "home"),
        XDG_STATE_HOME=str(tmp / "state"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        CLOUDSH_SANDBOX_DIR=str(tmp / "sandbox"),
        CLOUDSH_SANDBOX_BOOT_S=str(boot_s),
        CLOUDSH_SANDBOX_TIMING=timing,
        AWS_EC2_METADATA_DISABLED="true",
    )
    if ssh_cipher:
        env["CLOUDSH_SANDBOX_SSH_CIPHER"] = ssh_cipher
    (tmp / "home").mkdir()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        from cloudsh.config import Settings
        from cloudsh.sandbox.control import sandbox_env, sandbox_up

        state = sandbox_up(Settings.load())
        env.update(sandbox_env(state))
        os.environ.update(env)
        yield env
    finally:
        from cloudsh.config import Settings
        from cloudsh.sandbox.control import sandbox_down

        sandbox_down(Settings.load())
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)  # boxes' disks and copies: gigabytes a run


def bench_dir(env: dict[str, str], name: str) -> Path:
    """A working directory for a bench, removed with its `bench_sandbox`."""
    path = Path(env["HOME"]).parent / name
    path.mkdir()
    return path


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of(n: int, fn: Callable[[], Any]) -> float:
    return min(timed(fn) for _ in range(n))


def median_of(n: int, fn: Callable[[], Any]) -> float:
    return statistics.median(timed(fn) for _ in range(n))


OUT = ROOT / "bench" / "out"


def report(title: str, rows: list[tuple[str, str]], figures: dict[str, float] | None = None) -> Path:
    """Print the rows; write them, with the raw `figures`, to bench/out/<title>.json so two
    runs can be compared (`diff`, `jq`)."""
    print(f"\n== {title}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    OUT.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
    path = OUT / f"{slug}.json"
    record = {"title": title, "when": datetime.now(UTC).isoformat(timespec="seconds"), "rows": dict(rows),
              "figures": figures or {}}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def direct_ssh(env: dict[str, str], name: str) -> list[str]:
    """OpenSSH options that send `ssh -F <ssh-config file> name` straight to the box's
    current address instead of through cloudsh's ProxyCommand: OpenSSH as the peer."""
    import json

    [rec] = [r for r in json.loads(run([str(BIN / "cloudsh"), "ls", "--json"], env).stdout) if r["name"] == name]
    return ["-o", "ProxyCommand=none", "-o", f"HostName={rec['public_ip']}", "-o", f"Port={rec['ssh_port']}"]
