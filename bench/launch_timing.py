"""`cloudsh launch` against EC2's own timeline (`CLOUDSH_SANDBOX_TIMING=ec2`).

The sandbox's timeline for one box: from RunInstances (cloudsh prints "launched i-…" as
it returns) to the box's SSH server listening (the daemon logs "ssh on …"). cloudsh's own
time is from that line to "ready". The overhead is the difference: what cloudsh adds on
top of EC2. Target: <= 1 s, with progress on screen the whole time (the longest silence
is printed too).
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

from bench.common import BIN, bench_sandbox, report

BOOT_S = 10.0  # running -> SSH answering, on top of EC2's `pending`


def _ssh_listening_at(log: Path, instance_id: str) -> float:
    """When the daemon logged the box's SSH server as listening (epoch seconds)."""
    for line in log.read_text().splitlines():
        if f"{instance_id}: ssh on" in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise RuntimeError(f"the daemon never logged {instance_id}'s SSH server")


def _launch(env: dict[str, str], name: str) -> tuple[float, float, float, str, float]:
    """(start, time of "launched", end, instance id, longest silence) of one launch."""
    started = time.time()
    proc = subprocess.Popen(
        [str(BIN / "cloudsh"), "launch", name, "--type", "t3.micro"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    assert proc.stderr is not None
    launched_at, iid, last, silence = 0.0, "", time.time(), 0.0
    for line in proc.stderr:
        now = time.time()
        silence = max(silence, now - last)
        last = now
        if line.startswith("launched i-"):
            launched_at, iid = now, line.split()[1]
    proc.wait()
    end = time.time()
    assert proc.returncode == 0 and iid, f"launch failed ({proc.returncode})"
    return started, launched_at, end, iid, max(silence, end - last)


def main() -> float:
    with bench_sandbox(boot_s=BOOT_S, timing="ec2") as env:
        log = Path(env["CLOUDSH_SANDBOX_DIR"]) / "daemon.log"
        # The first launch also imports the key pair and makes the group; the second is a
        # launch as most are. Both are measured from RunInstances on.
        rows = []
        overheads = []
        for name in ("timing-1", "timing-2"):
            started, launched_at, end, iid, silence = _launch(env, name)
            listening = _ssh_listening_at(log, iid)
            sandbox_s, cloudsh_s = listening - launched_at, end - launched_at
            overheads.append(cloudsh_s - sandbox_s)
            rows += [
                (f"{name}: before RunInstances (checks, quota, key, group)", f"{launched_at - started:.2f} s"),
                (f"{name}: sandbox RunInstances -> SSH listening", f"{sandbox_s:.2f} s"),
                (f"{name}: cloudsh RunInstances -> ready", f"{cloudsh_s:.2f} s"),
                (f"{name}: overhead", f"{cloudsh_s - sandbox_s:.2f} s (target <= 1 s)"),
                (f"{name}: longest time without a progress line", f"{silence:.1f} s"),
            ]
    report("launch on EC2's timeline (CLOUDSH_SANDBOX_TIMING=ec2)", rows)
    return max(overheads)


if __name__ == "__main__":
    main()
