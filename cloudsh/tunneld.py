"""The per-user background tunnel keeper: `python -m cloudsh.tunneld`.

Started on demand by `tunnel NAME PORT --background` (see `ops/background.py` for the
client and the wire format), one per user: a lock file in its private directory keeps a
second one from starting. Every forward is a `TunnelKeeper`, the same one behind the
foreground `tunnel`, so it reconnects when the box comes back after a stop or an address
change and keeps its local port. It probes each open forward now and then, counts the
bytes it carries, answers only its own user, and exits once it keeps no tunnel.
Logs go to `tunneld.log` beside its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from cloudsh.config import Settings
from cloudsh.errors import CloudshError
from cloudsh.ops import tunnels
from cloudsh.ops.background import BackgroundTunnel, private_dir
from cloudsh.ops.tunnels import (
    TunnelEvent,
    TunnelKeeper,
    TunnelOpened,
)
from cloudsh.root import connect
from cloudsh.services.backend import Backend

log = logging.getLogger("cloudsh.tunneld")

#: Seconds between probes of an open forward (env `CLOUDSH_TUNNEL_PROBE_S`).
PROBE_S = float(os.environ.get("CLOUDSH_TUNNEL_PROBE_S", "30"))
#: Seconds between attempts to reach a box that went away (env `CLOUDSH_TUNNEL_RETRY_S`).
RETRY_S = float(os.environ.get("CLOUDSH_TUNNEL_RETRY_S", str(tunnels.RETRY_S)))
#: Seconds a keeper started for nothing waits for its first request.
IDLE_EXIT_S = 30.0


@dataclass
class Kept:
    """One background forward and what the keeper last heard about it."""

    box: str
    keeper: TunnelKeeper
    remote: int
    state: str = "opening"
    note: str = ""
    jupyter: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def local(self) -> int:
        return self.keeper.ports[0][0]

    def matches(self, box: str) -> bool:
        inst = self.keeper.instance
        return box in (self.box, self.keeper.label) or (inst is not None and box in (inst.id, inst.name))

    def record(self) -> BackgroundTunnel:
        return BackgroundTunnel(
            self.keeper.label, self.local, self.remote, self.state, self.keeper.moved, self.note, self.jupyter
        )

    def on_event(self, event: TunnelEvent) -> None:
        self.state = tunnels.state_after(event)
        if isinstance(event, TunnelOpened):
            self.note, self.jupyter = "", event.jupyter
        else:
            self.note = event.reason
        log.info("%s:%s -> localhost:%s: %s %s", self.keeper.label, self.remote, self.local, self.state, self.note)


class Keeper:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kept: list[Kept] = []
        self.backends: dict[tuple[Any, ...], Backend] = {}
        self.busy = 0
        self.done = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None

    def backend(self, request: dict[str, Any]) -> Backend:
        key = (request.get("sandbox"), request.get("profile"), request.get("region"))
        if key not in self.backends:
            b = connect(self.settings, sandbox=key[0], profile=key[1], region=key[2])
            b.tell = log.info
            self.backends[key] = b
        return self.backends[key]

    async def serve(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.server = await asyncio.start_unix_server(self.handle, path)
        os.chmod(path, 0o600)
        log.info("listening on %s (pid %s)", path, os.getpid())
        asyncio.get_running_loop().call_later(IDLE_EXIT_S, self.maybe_exit)
        probes = asyncio.create_task(self.probe_forever())
        try:
            await self.done.wait()
        finally:
            probes.cancel()
            self.server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            for k in list(self.kept):
                k.keeper.close()
            for b in self.backends.values():
                await b.close()
        log.info("no tunnels left: exiting")

    def maybe_exit(self) -> None:
        if not self.kept and not self.busy and not self.done.is_set():
            if self.server is not None:
                self.server.close()  # a client from now on starts a new keeper
            self.done.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.busy += 1
        try:
            sock = writer.get_extra_info("socket")
            _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                log.warning("refused a connection from uid %s", uid)
                return
            line = await reader.readline()
            try:
                answer = {"ok": True, **await self.dispatch(json.loads(line))}
            except CloudshError as exc:
                answer = {"ok": False, "error": exc.message, "hint": exc.hint}
            except Exception as exc:  # one bad request must not end the others' tunnels
                log.exception("request failed")
                answer = {"ok": False, "error": f"the background tunnel keeper failed: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            self.busy -= 1
            self.maybe_exit()

    async def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "list":
            return {"tunnels": [k.record().as_json() for k in self.kept]}
        if op == "open":
            return {"tunnels": [k.record().as_json() for k in await self.open(request)]}
        if op == "close":
            return {"tunnels": [k.record().as_json() for k in self.close(request["box"], request.get("port"))]}
        raise CloudshError(f"unknown request {op!r}")

    def holder(self, local: int) -> Kept | None:
        return next((k for k in self.kept if k.local == local), None)

    async def open(self, request: dict[str, Any]) -> list[Kept]:
        box, ports = request["box"], [(int(lo), int(re)) for lo, re in request["ports"]]
        for local, _ in ports:
            held = self.holder(local) if local else None
            if held is not None:
                raise CloudshError(
                    f"local port {local} is already held by the background tunnel to {held.keeper.label}:{held.remote}",
                    f"close it with `cloudsh tunnel close {held.keeper.label} {local}` or pick another local port",
                )
        backend = self.backend(request)
        new: list[Kept] = []
        try:
            for local, remote in ports:
                kept = Kept(box, TunnelKeeper(backend, box, [(local, remote)], retry_s=RETRY_S), remote)
                kept.keeper.on_event = kept.on_event
                new.append(kept)
                await kept.keeper.open()
        except BaseException:
            for k in new:
                k.keeper.close()
            raise
        for k in new:
            self.kept.append(k)
            k.task = asyncio.create_task(self.keep(k))
        return new

    async def keep(self, k: Kept) -> None:
        try:
            await k.keeper.keep()
        except CloudshError as exc:
            log.info("%s:%s ended: %s", k.keeper.label, k.remote, exc)
        finally:
            if k in self.kept:
                self.kept.remove(k)
            self.maybe_exit()

    def close(self, box: str, port: int | None) -> list[Kept]:
        gone = [k for k in self.kept if k.matches(box) and (port is None or k.local == port)]
        for k in gone:
            self.kept.remove(k)
            k.keeper.close()
            if k.task is not None:
                k.task.cancel()
            k.state = "closed"
        return gone

    async def probe_forever(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            for k in [k for k in self.kept if k.state == "open"]:
                k.note = await probe(k.local, k.remote)

async def probe(local: int, remote: int) -> str:
    """Connect through the forward: '' if the box's port takes the connection, else why not
    (a refused port closes the forwarded connection at once)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", local), 5)
    except (TimeoutError, OSError) as exc:
        return f"probe failed: {exc}"
    try:
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                return f"nothing answers on the box's port {remote}"
        return ""
    finally:
        writer.close()


def main() -> int:
    settings = Settings.load()
    directory = private_dir(settings)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s tunneld[%(process)d] %(message)s"
    )
    lock = open(directory / "lock", "w")  # noqa: SIM115 - held for the process's life
    for _ in range(200):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if (directory / "sock").exists():
                return 0  # another keeper runs: the client talks to that one
            time.sleep(0.05)  # one that is exiting: take over once it has gone
    else:
        return 0
    asyncio.run(Keeper(settings).serve(str(directory / "sock")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
