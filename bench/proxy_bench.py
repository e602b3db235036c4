"""`ssh -F FILE NAME true` through `ssh-config`'s ProxyCommand (`cloudsh.proxy`, warm: the
box was reached or listed in the last minute) vs OpenSSH straight to the box's address
with the same options, on one sandbox box; medians, interleaved so both see the same load.

Target: ratio (through the proxy / straight) <= 1.3.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import time
from pathlib import Path

from bench.common import BIN, bench_sandbox, direct_ssh, report, run

ROUNDS = 15


def to_first_byte(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from starting the ProxyCommand to the box's SSH banner on its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.read(4)
    elapsed = time.perf_counter() - t0
    proc.kill()
    proc.wait()
    return elapsed


def main() -> float:
    with bench_sandbox() as env:
        cloudsh = str(BIN / "cloudsh")
        run([cloudsh, "launch", "proxied", "--type", "t3.micro"], env)
        cfg = Path(env["HOME"]) / "ssh_config"
        run([cloudsh, "ssh-config", "-o", str(cfg)], env)
        straight = ["ssh", "-F", str(cfg), *direct_ssh(env, "proxied"), "proxied", "true"]
        proxied = ["ssh", "-F", str(cfg), "proxied", "true"]
        run(proxied, env)  # the first connection confirms the host key (the cold path)
        times: dict[str, list[float]] = {"proxied": [], "straight": []}
        for _ in range(ROUNDS):  # well inside the minute the proxy trusts what it saw
            for key, argv in (("proxied", proxied), ("straight", straight)):
                t0 = time.perf_counter()
                subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, capture_output=True)
                times[key].append(time.perf_counter() - t0)
        line = next(x for x in cfg.read_text().splitlines() if x.strip().startswith("ProxyCommand"))
        command = shlex.split(line.split(None, 1)[1].replace("%%", "%"))
        first_byte = statistics.median(to_first_byte(command, env) for _ in range(ROUNDS))
    ours, peer = statistics.median(times["proxied"]), statistics.median(times["straight"])
    ratio = ours / peer
    report(
        f"ssh NAME true through the ssh-config ProxyCommand vs straight (median of {ROUNDS})",
        [
            ("through cloudsh.proxy (warm)", f"{ours * 1000:.0f} ms"),
            ("OpenSSH straight to the address", f"{peer * 1000:.0f} ms"),
            ("ratio", f"{ratio:.2f} (target <= 1.3)"),
            ("proxy alone: start to the box's first byte", f"{first_byte * 1000:.0f} ms"),
        ],
    )
    return ratio


if __name__ == "__main__":
    main()
