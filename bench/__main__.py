"""`make bench`: every benchmark, each printing its numbers and ratio against its peer."""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "bench.startup", "bench.ls_vs_awscli", "bench.ssh_bench", "bench.jobs_bench", "bench.launch_timing",
    "bench.orphans_bench", "bench.idle_agent_bench", "bench.proxy_bench", "bench.bgtunnel_bench",
]
OPTIONAL = ["bench.tui_startup", "bench.repl_bench"]


def main() -> int:
    for name in BENCHES + OPTIONAL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in OPTIONAL and exc.name == name:
                continue
            raise
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
