"""SSH numbers on one sandbox box, each against OpenSSH in the same run. The far end is
the sandbox's SSH server (asyncssh, a Python server), the same for both clients, and it
offers one cipher (CIPHER) and no compression, so both sides use the same cipher:

- command round trip on cloudsh's reused connection vs OpenSSH with a ControlMaster
  connection (the fair peer: also reused) and vs a fresh `ssh host true`;
- tunnel throughput, 200 MB of random (incompressible) bytes, served on the box by
  Python's http.server, through `cloudsh tunnel` vs
  `ssh -L` (target ratio >= 0.6);
- launch-to-ready: the gap between the box's SSH server answering and cloudsh
  reporting it ready (target <= 0.5 s).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import BIN, bench_sandbox, direct_ssh, median_of, report

SIZE = 200 * 1024 * 1024
CIPHER = "aes128-gcm@openssh.com"


REMOTE_PORT = 8765


def serve_on_box(cloudsh: str, env: dict[str, str], box: str) -> None:
    """On the box: SIZE random (incompressible) bytes in ~/blob, served by Python's
    http.server on its own localhost:REMOTE_PORT (the far end of both tunnels)."""
    subprocess.run([cloudsh, "run", box, "--",
                    f"head -c {SIZE} /dev/urandom > ~/blob && (setsid nohup python3 -m http.server {REMOTE_PORT} "
                    f"--bind 127.0.0.1 </dev/null >/dev/null 2>&1 &) && "
                    f"for i in $(seq 100); do curl -sf -o /dev/null -r 0-0 http://127.0.0.1:{REMOTE_PORT}/blob && exit 0; "
                    "sleep 0.1; done; exit 1"], env=env, check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pull(port: int, deadline: float = 30.0) -> float:
    """Seconds to fetch the box's SIZE-byte blob through localhost:port (waiting for the
    listener first)."""
    t_end = time.monotonic() + deadline
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > t_end:
                raise
            time.sleep(0.05)
    got = 0
    t0 = time.perf_counter()
    with s:
        s.settimeout(60)
        s.sendall(b"GET /blob HTTP/1.0\r\n\r\n")
        while data := s.recv(1 << 20):
            got += len(data)
    elapsed = time.perf_counter() - t0
    assert got > SIZE, f"short read: {got}"  # the body and the response headers
    return elapsed


async def launch_gap(name: str) -> float:
    """Launch a box; return (cloudsh says ready) - (its SSH server first answered)."""
    from cloudsh.config import Settings
    from cloudsh.ops import instances as ops
    from cloudsh.root import connect
    from cloudsh.sandbox.state import read_state

    settings = Settings.load()
    backend = connect(settings, sandbox=True)
    first_answer: dict[str, float] = {}
    stop = asyncio.Event()

    async def probe() -> None:
        # A tight independent prober: the moment a banner comes back is "answering".
        while not stop.is_set():
            st = read_state(settings.sandbox_path)
            for iid, inst in (st.instances if st else {}).items():
                if iid in first_answer or not inst.ssh_port:
                    continue
                try:
                    r, w = await asyncio.open_connection(inst.ssh_host or "127.0.0.1", inst.ssh_port)
                    if (await asyncio.wait_for(r.readline(), 1)).startswith(b"SSH-"):
                        first_answer[iid] = time.monotonic()
                    w.close()
                except (TimeoutError, OSError):
                    pass
            await asyncio.sleep(0.005)

    prober = asyncio.create_task(probe())
    plan = await ops.plan_launch(backend, name, instance_type="t3.micro")
    inst = await ops.launch(backend, plan, wait=True)
    ready_at = time.monotonic()
    stop.set()
    await prober
    await backend.close()
    return ready_at - first_answer[inst.id]


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    with bench_sandbox(boot_s=1.0, ssh_cipher=CIPHER) as env:
        gaps = [asyncio.run(launch_gap(f"ready{i}")) for i in range(3)]
        results["launch_gap_s"] = statistics.median(gaps)
        cloudsh = str(BIN / "cloudsh")
        cfg = Path(env["HOME"]) / "ssh_config"
        subprocess.run([cloudsh, "ssh-config", "-o", str(cfg)], env=env, check=True, capture_output=True)

        # Round trip: cloudsh's pooled connection vs a fresh OpenSSH connection per command.
        from cloudsh.api import Cloud

        cloud = Cloud(sandbox=True)
        box = cloud.instance("ready0")
        box.run("true")  # connect and pin once
        reused = median_of(20, lambda: box.run("true"))
        straight = direct_ssh(env, "ready0")  # OpenSSH itself, not through cloudsh's ProxyCommand
        ssh = ["ssh", "-F", str(cfg), *straight, "-o", f"Ciphers={CIPHER}", "-o", "Compression=no"]
        fresh = median_of(10, lambda: subprocess.run([*ssh, "ready0", "true"], check=True, stdin=subprocess.DEVNULL))
        mux = ["-o", f"ControlPath={Path(env['HOME']) / 'mux-%C'}"]
        subprocess.run([*ssh, *mux, "-o", "ControlMaster=yes", "-o", "ControlPersist=60", "-fN", "ready0"],
                       check=True, stdin=subprocess.DEVNULL)
        shared = median_of(20, lambda: subprocess.run([*ssh, *mux, "ready0", "true"], check=True, stdin=subprocess.DEVNULL))
        subprocess.run([*ssh, *mux, "-O", "exit", "ready0"], stdin=subprocess.DEVNULL, capture_output=True)
        cloud.close()
        results["rtt_reused_ms"], results["rtt_openssh_ms"] = reused * 1000, fresh * 1000
        results["rtt_controlmaster_ms"] = shared * 1000

        # Tunnel throughput.
        serve_on_box(cloudsh, env, "ready0")
        remote = REMOTE_PORT
        local = free_port()
        proc = subprocess.Popen([cloudsh, "tunnel", "ready0", f"{local}:{remote}"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        proc.stdout.readline()
        t_ours = min(pull(local) for _ in range(2))
        proc.terminate()
        proc.wait()
        local2 = free_port()
        peer = subprocess.Popen([*ssh, "-N", "-L", f"{local2}:localhost:{remote}", "ready0"],
                                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_peer = min(pull(local2) for _ in range(2))
        peer.terminate()
        peer.wait()
        mb = SIZE / 1e6
        results["tunnel_mb_s"], results["openssh_mb_s"] = mb / t_ours, mb / t_peer
    report(
        f"SSH on a sandbox box (far end: asyncssh, a Python server; cipher {CIPHER} on both sides)",
        [
            ("launch: ready reported after SSH answered", f"{results['launch_gap_s'] * 1000:.0f} ms median of 3 (target <= 500 ms)"),
            ("run `true`, cloudsh's reused connection (median 20)", f"{results['rtt_reused_ms']:.1f} ms"),
            ("OpenSSH `ssh host true` over a ControlMaster (median 20)", f"{results['rtt_controlmaster_ms']:.1f} ms"),
            ("OpenSSH `ssh host true`, fresh connection (median 10)", f"{results['rtt_openssh_ms']:.1f} ms"),
            ("round trip ratio cloudsh/ControlMaster", f"{results['rtt_reused_ms'] / results['rtt_controlmaster_ms']:.2f}"),
            ("tunnel 200 MB random bytes via cloudsh tunnel", f"{results['tunnel_mb_s']:.0f} MB/s"),
            ("tunnel 200 MB random bytes via ssh -L", f"{results['openssh_mb_s']:.0f} MB/s"),
            ("throughput ratio cloudsh/OpenSSH", f"{results['tunnel_mb_s'] / results['openssh_mb_s']:.2f} (target >= 0.6)"),
        ],
        results,
    )
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
    sys.exit(0)
