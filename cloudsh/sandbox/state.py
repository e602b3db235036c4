"""The sandbox daemon's published state: the one file its clients read.

The daemon rewrites `<sandbox_dir>/state.json` atomically (write + rename) whenever
something a client needs changes. Clients (the sandbox host resolver, `sandbox status`,
`sandbox env`) only read it. Layout::

    {
      "pid": 1234,                       # the daemon's pid
      "endpoint": "http://127.0.0.1:PORT",
      "region": "us-east-1",
      "started_at": "2026-11-22T04:40:00+00:00",
      "isolation": "bubblewrap" | "none",
      "degraded": ["one line per thing that works less well than on AWS"],
      "imds_endpoint": "http://127.0.0.1:PORT2" | null,
      "public_address": "127.0.0.1",     # this machine's simulated public address (firewall.py)
      "instances": {
        "i-0123": {"state": "running", "ssh_port": 22 | 40001 | null,
                   "ssh_host": "127.71.4.9" | null,  # the box's address, its SSH server's
                   "host_key": "ssh-ed25519 AAAA...", "ready": true}
      }
    }

`ready` is true once that instance's SSH server accepts connections.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"

#: Credentials and region that the sandbox's moto server accepts (any would do).
ACCESS_KEY_ID = "AKIASANDBOXCLOUDSH00"
SECRET_ACCESS_KEY = "sandbox-secret-not-a-real-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class SandboxInstance:
    state: str
    ssh_port: int | None
    host_key: str
    ready: bool
    ssh_host: str | None = None


@dataclass(frozen=True)
class SandboxState:
    pid: int
    endpoint: str
    region: str = REGION
    started_at: str = ""
    isolation: str = "none"
    degraded: tuple[str, ...] = ()
    imds_endpoint: str | None = None
    public_address: str = "127.0.0.1"
    instances: dict[str, SandboxInstance] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "endpoint": self.endpoint,
            "region": self.region,
            "started_at": self.started_at,
            "isolation": self.isolation,
            "degraded": list(self.degraded),
            "imds_endpoint": self.imds_endpoint,
            "public_address": self.public_address,
            "instances": {k: vars(v) for k, v in self.instances.items()},
        }


def read_state(sandbox_dir: Path) -> SandboxState | None:
    """The published state, or None if no daemon has written one (or it is unreadable)."""
    try:
        raw = json.loads((sandbox_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    try:
        instances = {
            iid: SandboxInstance(
                state=str(v.get("state", "")),
                ssh_port=v.get("ssh_port"),
                host_key=str(v.get("host_key", "")),
                ready=bool(v.get("ready")),
                ssh_host=v.get("ssh_host"),
            )
            for iid, v in raw.get("instances", {}).items()
        }
        return SandboxState(
            pid=int(raw["pid"]),
            endpoint=str(raw["endpoint"]),
            region=str(raw.get("region", REGION)),
            started_at=str(raw.get("started_at", "")),
            isolation=str(raw.get("isolation", "none")),
            degraded=tuple(raw.get("degraded", ())),
            imds_endpoint=raw.get("imds_endpoint"),
            public_address=str(raw.get("public_address") or "127.0.0.1"),
            instances=instances,
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_state(sandbox_dir: Path, state: SandboxState) -> None:
    """Atomically replace the published state."""
    import tempfile  # here, not at the top: clients (the ssh-config proxy) only read

    sandbox_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=sandbox_dir, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(state.to_json(), f, indent=1)
    os.replace(tmp, sandbox_dir / STATE_FILE)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
