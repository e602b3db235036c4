"""Background tunnels: the client side of the per-user tunnel keeper (`cloudsh.tunneld`).

`tunnel NAME PORT --background` hands its forwards to one process per user that outlives
the terminal; `tunnels` and the app's tunnels view list what it keeps, `tunnel close`
ends them. They talk over a Unix socket in a directory only its owner may enter, one
JSON object a line each way. The process starts on demand and exits when it keeps no
tunnel, so `tunnels` with nothing open starts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudsh.config import Settings
from cloudsh.errors import CloudshError

#: Seconds to wait for a freshly started keeper to answer on its socket.
START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class BackgroundTunnel:
    """One forward kept in the background: localhost:`local` -> `box`:`remote`."""

    box: str
    local: int
    remote: int
    #: `opening`, `open`, `reconnecting`, `box stopped` or `closed`
    state: str
    #: Bytes carried both ways since it was opened.
    moved: int = 0
    #: What the last probe or reconnect said, if anything.
    note: str = ""
    #: The URL, with its token, of the Jupyter server it reaches, if any (`ops.jupyter`).
    jupyter: str = ""

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local}/"

    @property
    def moved_text(self) -> str:
        """`moved` for people: 0 B, 12.3 kB, 4.0 MB, 1.2 GB."""
        size, unit = float(self.moved), "B"
        for unit in ("B", "kB", "MB", "GB", "TB"):
            if size < 1000 or unit == "TB":
                break
            size /= 1000
        return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"

    def as_json(self) -> dict[str, Any]:
        return {
            "box": self.box, "local_port": self.local, "remote_port": self.remote,
            "state": self.state, "bytes": self.moved, "note": self.note, "url": self.url, "jupyter": self.jupyter,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackgroundTunnel:
        return cls(d["box"], d["local_port"], d["remote_port"], d["state"], d.get("bytes", 0), d.get("note", ""),
                   d.get("jupyter", ""))


def private_dir(settings: Settings) -> Path:
    """The keeper's directory (mode 0700, this user's); refuses one anybody else may enter."""
    path = settings.state_dir / "tunnels"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise CloudshError(
            f"{path} is not private to you",
            f"remove it or run `chmod 700 {path}`; background tunnels need a directory only you can enter",
        )
    return path


def socket_path(settings: Settings) -> Path:
    return private_dir(settings) / "sock"


def log_path(settings: Settings) -> Path:
    return private_dir(settings) / "tunneld.log"


async def _ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    if not line:
        raise CloudshError("the background tunnel keeper hung up", f"see {path.parent / 'tunneld.log'}")
    answer: dict[str, Any] = json.loads(line)
    if not answer.get("ok"):
        raise CloudshError(answer.get("error", "the background tunnel keeper refused"), answer.get("hint", ""))
    return answer


async def ask(settings: Settings, request: dict[str, Any], *, start: bool = False) -> dict[str, Any] | None:
    """Send `request` to the keeper; None if it is not running (and `start` is false)."""
    path = socket_path(settings)
    try:
        return await _ask(path, request)
    except (FileNotFoundError, ConnectionRefusedError):
        if not start:
            return None
    except OSError as exc:
        raise _unreachable(path, exc) from None
    _start(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        try:
            return await _ask(path, request)
        except (FileNotFoundError, ConnectionRefusedError):
            if loop.time() > deadline:
                raise CloudshError(
                    "the background tunnel keeper did not start", f"see {log_path(settings)}"
                ) from None
            await asyncio.sleep(0.05)
        except OSError as exc:
            raise _unreachable(path, exc) from None


def _unreachable(path: Path, exc: OSError) -> CloudshError:
    return CloudshError(
        f"cannot reach the background tunnel keeper at {path}: {exc.strerror or exc}",
        "check that the state directory is yours and its path is short (XDG_STATE_HOME)",
    )


def _start(settings: Settings) -> None:
    """Start the keeper detached from this terminal (its own session), logging to the state dir."""
    with open(log_path(settings), "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "cloudsh.tunneld"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )


def _tunnels(answer: dict[str, Any] | None) -> list[BackgroundTunnel]:
    return [BackgroundTunnel.from_json(d) for d in (answer or {}).get("tunnels", [])]


async def open_background(
    settings: Settings,
    box: str,
    ports: list[tuple[int, int]],
    *,
    sandbox: bool | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> list[BackgroundTunnel]:
    """Have the keeper open these forwards; returns them once open, or raises why not
    (then nothing of this request stays open)."""
    request = {"op": "open", "box": box, "ports": ports, "sandbox": sandbox, "profile": profile, "region": region}
    return _tunnels(await ask(settings, request, start=True))


async def list_background(settings: Settings) -> list[BackgroundTunnel]:
    """What the keeper holds now (nothing when it is not running)."""
    return _tunnels(await ask(settings, {"op": "list"}))


async def close_background(settings: Settings, box: str, port: int | None = None) -> list[BackgroundTunnel]:
    """End the background tunnels to `box` (only the one on local `port`, if given);
    returns those ended. Raises when none matched."""
    closed = _tunnels(await ask(settings, {"op": "close", "box": box, "port": port}))
    if not closed:
        which = f"{box} on local port {port}" if port else box
        raise CloudshError(f"no background tunnel to {which}", "see them with `cloudsh tunnels`")
    return closed
