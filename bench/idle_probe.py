"""Run by `bench.idle_agent_bench` in a process of its own: twenty idle-agent checks, then
the CPU per check, the process's peak resident memory (KiB) and how many processes the
checks looked at."""

from __future__ import annotations

import resource
import time

from cloudsh.agents import idle


def main() -> None:
    cfg = {"after_s": 3600, "keep_alive": ["no-such-pattern"], "gpu": False}
    before: dict[int, tuple[str, float]] = {}
    t = time.process_time()
    for _ in range(20):
        _, before = idle.check(cfg, before, 60.0)
    print((time.process_time() - t) / 20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(before))


if __name__ == "__main__":
    main()
