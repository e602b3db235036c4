"""`make bench`: every benchmark, each printing its numbers and ratio against its peer."""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = [
    "bench.startup", "bench.ls_vs_awscli", "bench.ssh_bench", "bench.jobs_bench", "bench.launch_timing",
    "bench.orphans_bench", "bench.idle_agent_bench", "bench.proxy_bench", "bench.bgtunnel_bench",
]
OPTIONAL = ["bench.tui_startup", "bench.repl_bench"]


def main() -> int:
    took: list[tuple[str, float]] = []
    for name in BENCHES + OPTIONAL:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in OPTIONAL and exc.name == name:
                continue
            raise
        started = time.monotonic()
        module.main()
        took.append((name, time.monotonic() - started))
        print(f"  ({name} took {took[-1][1]:.0f} s)", flush=True)
    print("\n== time per bench\n" + "\n".join(f"  {name.ljust(24)} {s:4.0f} s" for name, s in took)
          + f"\n  {'all'.ljust(24)} {sum(s for _, s in took):4.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
