"""Job numbers on one sandbox spot box:

- results latency: from a result file being closed on the box to it being complete
  locally while `script --follow` runs (median, target < 3 s);
- interruption reaction: from the spot notice appearing in instance metadata to the job
  getting SIGTERM (target < 10 s; the watcher polls every 5 s, as AWS recommends).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_sandbox, run

FILES = 20
ROUNDS = 3
NOTICE_S = "6"

WRITER = f"""#!/bin/bash
mkdir -p res
for i in $(seq 1 {FILES}); do
  head -c 200000 /dev/urandom > res/.f$i.tmp
  sleep 0.$((RANDOM % 9 + 1))
  date +%s.%N > res/f$i.stamp && mv res/.f$i.tmp res/f$i.bin
done
"""

LOOPER = """#!/bin/bash
trap 'echo "TERM $(date +%s.%N)"; exit 143' TERM
while true; do sleep 0.2 & wait $!; done
"""


def cloudsh(env: dict[str, str], *args: str) -> str:
    return run([sys.executable, "-m", "cloudsh", *args], env).stdout


def results_latency(env: dict[str, str], box: str, work: Path) -> list[float]:
    from cloudsh.config import Settings
    from cloudsh.ops import jobs as ops
    from cloudsh.root import connect

    script = work / "writer.sh"
    script.write_text(WRITER)
    script.chmod(0o755)
    local = work / "res"
    job_id = cloudsh(env, "script", box, str(script), "--sync", f"res:{local}").strip()
    arrived: dict[str, float] = {}

    def on_sync(result: ops.SyncResult) -> None:
        now = time.time()
        for name in result.copied:
            arrived.setdefault(name, now)

    async def follow() -> None:
        backend = connect(Settings.load(), sandbox=True)
        try:
            await ops.follow(backend, job_id, on_output=lambda _: None, on_sync=on_sync)
        finally:
            await backend.close()

    asyncio.run(follow())
    out = []
    for i in range(1, FILES + 1):
        closed = float((local / f"f{i}.stamp").read_text())
        if f"f{i}.bin" in arrived:
            out.append(arrived[f"f{i}.bin"] - closed)
    return out


def interruption_reaction(env: dict[str, str], box: str, work: Path) -> list[float]:
    script = work / "looper.sh"
    script.write_text(LOOPER)
    script.chmod(0o755)
    job_id = cloudsh(env, "script", box, str(script)).strip()
    out = []
    for n in range(ROUNDS):
        if n:
            cloudsh(env, "start", box)
            cloudsh(env, "job", "resume", job_id)
        time.sleep(1.0 + n)  # land at different points of the watcher's poll cycle
        noticed = time.time()
        run([sys.executable, "-m", "cloudsh", "sandbox", "interrupt", box], {**env, "CLOUDSH_SANDBOX_NOTICE_S": NOTICE_S})
        deadline = time.monotonic() + 30
        while "stopped" not in cloudsh(env, "ls"):
            if time.monotonic() > deadline:
                raise RuntimeError("the box did not stop")
            time.sleep(0.5)
        cloudsh(env, "start", box)
        log = cloudsh(env, "logs", job_id)
        terms = [float(line.split()[1]) for line in log.splitlines() if line.startswith("TERM ")]
        out.append(terms[-1] - noticed)
        cloudsh(env, "stop", box)
    return out


def main() -> None:
    with bench_sandbox() as env:
        os.chdir(tempfile.mkdtemp(prefix="cloudsh-jobs-bench-"))
        work = Path.cwd()
        cloudsh(env, "launch", "bench", "--type", "t3.micro", "--spot")
        lat = results_latency(env, "bench", work)
        print(f"jobs: result closed on box -> complete locally, {len(lat)} files: "
              f"median {statistics.median(lat):.2f} s, max {max(lat):.2f} s (target median < 3 s)")
        react = interruption_reaction(env, "bench", work)
        print(f"jobs: spot notice -> SIGTERM to the job, {len(react)} interruptions: "
              f"median {statistics.median(react):.2f} s, max {max(react):.2f} s "
              f"(target < 10 s; dstack users report 2-20 min)")
        subprocess.run([sys.executable, "-m", "cloudsh", "terminate", "bench", "--yes"], env=env,
                       capture_output=True, stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
