"""The idle agent's own cost on a box: CPU per check (every 60 s on EC2) as a share of
one CPU, and the resident memory of a process that ran its checks, on this machine's
process table (busier than a workstation's).

Targets: under 1 % of one CPU; under 30 MB.
"""

from __future__ import annotations

import subprocess
import sys

from bench.common import report


def main() -> float:
    out = subprocess.run([sys.executable, "-m", "bench.idle_probe"], capture_output=True, text=True, check=True).stdout.split()
    per_check, rss_kib, procs = float(out[0]), int(out[1]), int(out[2])
    share = per_check / 60.0
    report(
        "idle agent: one check (SSH ttys, CPU of every process, jobs, Jupyter, keep-alive patterns)",
        [("processes on this machine", str(procs)), ("CPU per check", f"{per_check * 1000:.1f} ms"),
         ("share of one CPU at 60 s", f"{share:.3%} (target < 1 %)"),
         ("resident memory", f"{rss_kib / 1024:.1f} MB (target < 30 MB)")],
    )
    return share


if __name__ == "__main__":
    main()
