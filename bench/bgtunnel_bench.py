"""Background tunnel throughput: 500 MB of incompressible data through `cloudsh tunnel
--background` vs `ssh -L`, the same cipher on both (target ratio >= 0.9).

The far end is a web server inside a sandbox box (its own network namespace under
bubblewrap) serving a file of random bytes; both tunnels go through that box's SSH server.
cloudsh's first cipher choice, aes128-gcm, is what it negotiates with the box; OpenSSH is
pinned to the same one with `-c`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BIN, bench_sandbox, report, run

SIZE = 500 * 1000 * 1000
PORT = 8899
CIPHER = "aes128-gcm@openssh.com"
ROUNDS = 3
#: A shell command for the box: a file of random bytes, served over HTTP on its loopback.
SERVE = (
    f"mkdir -p ~/blob && cd ~/blob && head -c {SIZE} /dev/urandom > blob && "
    f"(setsid nohup python3 -m http.server {PORT} --bind 127.0.0.1 </dev/null >/dev/null 2>&1 &) && "
    f"for i in $(seq 100); do curl -sf -o /dev/null -r 0-0 http://127.0.0.1:{PORT}/blob && exit 0; sleep 0.05; done; exit 1"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pull(port: int) -> float:
    """Seconds to fetch the whole file through localhost:port (waiting for the listener)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    got = 0
    t0 = time.perf_counter()
    with s:
        s.sendall(b"GET /blob HTTP/1.0\r\n\r\n")
        while data := s.recv(1 << 20):
            got += len(data)
    elapsed = time.perf_counter() - t0
    assert got > SIZE, f"short read: {got}"
    return elapsed


def main() -> dict[str, float]:
    cloudsh = str(BIN / "cloudsh")
    with bench_sandbox() as env:
        run([cloudsh, "launch", "far", "--type", "t3.micro"], env)
        run([cloudsh, "run", "far", "--", SERVE], env)
        cfg = Path(env["HOME"]) / "ssh_config"
        run([cloudsh, "ssh-config", "-o", str(cfg)], env)
        local, local2 = free_port(), free_port()
        run([cloudsh, "tunnel", "far", f"{local}:{PORT}", "--background"], env)
        peer = subprocess.Popen(
            ["ssh", "-F", str(cfg), "-c", CIPHER, "-N", "-L", f"{local2}:localhost:{PORT}", "far"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            # Taken in turns, so a busy moment on the machine falls on both alike.
            ours, theirs = [], []
            for _ in range(ROUNDS):
                ours.append(pull(local))
                theirs.append(pull(local2))
            t_ours, t_peer = min(ours), min(theirs)
            moved = json.loads(run([cloudsh, "tunnels", "--json"], env).stdout)[0]["bytes"]
        finally:
            peer.terminate()
            peer.wait()
            run([cloudsh, "tunnel", "close", "far"], env)
        run([cloudsh, "terminate", "far", "--yes"], env)
        from cloudsh.config import Settings
        from cloudsh.sandbox.state import read_state

        state = read_state(Settings.load().sandbox_path)
        isolation = state.isolation if state else "?"
    mb = SIZE / 1e6
    report(
        "Background tunnel, 500 MB of random bytes from a server inside a sandbox box",
        [
            (f"cloudsh tunnel --background ({CIPHER})", f"{mb / t_ours:.0f} MB/s (best of {ROUNDS}, in turns with ssh -L)"),
            (f"ssh -L -c {CIPHER}", f"{mb / t_peer:.0f} MB/s (best of {ROUNDS})"),
            ("throughput ratio cloudsh/OpenSSH", f"{t_peer / t_ours:.2f} (target >= 0.9)"),
            ("the box's isolation", isolation),
            ("bytes moved, as `tunnels` counts them", f"{moved / 1e6:.0f} MB over {ROUNDS} fetches"),
        ],
    )
    return {"bg_tunnel_mb_s": mb / t_ours, "openssh_mb_s": mb / t_peer}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
    sys.exit(0)
