"""Start-up cost of `cloudsh --help` and `cloudsh ls`: which heavy modules load, and how long.

`python -X importtime` totals for the CLI entry and the `ls` path; wall time of
`cloudsh --help`. Textual, IPython, paramiko and asyncssh must not appear on these paths.
"""

from __future__ import annotations

import re
import subprocess
import sys

from bench.common import BIN, best_of, report

HEAVY = ("textual", "IPython", "paramiko", "asyncssh", "prompt_toolkit")


def importtime(code: str) -> tuple[float, set[str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    total_us = 0
    tops: set[str] = set()
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) == 1:  # top-level imports only: their cumulative time
            total_us += int(m.group(2))
        if m:
            tops.add(m.group(4).split(".")[0])
    return total_us / 1e6, tops


def main() -> None:
    help_t, help_mods = importtime("import cloudsh.cli, cloudsh.commands")
    ls_t, ls_mods = importtime(
        "import cloudsh.cli, cloudsh.commands, cloudsh.root, cloudsh.services.backend, cloudsh.services.pricing, "
        "cloudsh.sandbox.control, cloudsh.sandbox.hosts, cloudsh.sandbox.pricing"
    )
    wall = best_of(5, lambda: subprocess.run([str(BIN / "cloudsh"), "--help"], capture_output=True, check=True))
    py = best_of(5, lambda: subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True))
    report(
        "start-up",
        [
            ("--help imports (importtime total)", f"{help_t * 1000:.0f} ms"),
            ("--help heavy modules loaded", ", ".join(sorted(set(HEAVY) & help_mods)) or "none"),
            ("ls path imports (importtime total)", f"{ls_t * 1000:.0f} ms"),
            ("ls path heavy modules loaded", ", ".join(sorted(set(HEAVY) & ls_mods)) or "none"),
            ("`cloudsh --help` wall (best of 5)", f"{wall * 1000:.0f} ms"),
            ("bare `python -c pass` (best of 5)", f"{py * 1000:.0f} ms"),
        ],
    )


if __name__ == "__main__":
    main()
