"""Port forwards the app keeps open, each the registry's `tunnel` command running in a
worker (so it reconnects the same way as `cloudsh tunnel`); cancelling closes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from textual.worker import Worker

from cloudsh.commands.registry import Context, dispatch
from cloudsh.commands.remote import parse_forward
from cloudsh.errors import CloudshError


@dataclass
class OpenTunnel:
    instance: str
    local_port: int
    remote_port: int
    status: str = "opening"
    worker: Worker[Any] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local_port}/"


class _TunnelOutput:
    """Turns the `tunnel` command's output into a status word for the tunnels view."""

    def __init__(self, tun: OpenTunnel, log: Callable[[str, str], None]) -> None:
        self.tun = tun
        self.log = log

    def print(self, text: str = "") -> None:
        self.tun.status = "open"
        self.log(f"tunnel {text}", "done")

    def json(self, data: Any) -> None:
        pass

    def info(self, text: str) -> None:
        if text.startswith("connection lost") or text.startswith("still cannot reach"):
            self.tun.status = "reconnecting"
        elif text.startswith("tunnels reopened"):
            self.tun.status = "open"
        if not text.startswith("tunnels open"):  # "press Ctrl-C" means nothing in the app
            self.log(f"tunnel {self.tun.instance}:{self.tun.remote_port}: {text}", "info")

    def write(self, chunk: str, *, err: bool = False) -> None:
        pass


class TunnelManager:
    def __init__(
        self,
        run_worker: Callable[..., Worker[Any]],
        context: Callable[[Any], Context],
        log: Callable[[str, str], None],
    ) -> None:
        self._run_worker = run_worker
        self._context = context
        self._log = log
        self.tunnels: dict[tuple[str, int], OpenTunnel] = {}

    def open_spec(self, box: str, spec: str) -> OpenTunnel | None:
        try:
            local, remote = parse_forward(spec)
        except CloudshError as exc:
            self._log(str(exc), "error")
            return None
        return self.open(box, local, remote)

    def open(self, box: str, local: int, remote: int) -> OpenTunnel:
        key = (box, local)
        existing = self.tunnels.get(key)
        if existing is not None and existing.status != "failed":
            return existing
        tun = OpenTunnel(box, local, remote)
        self.tunnels[key] = tun
        tun.worker = self._run_worker(self._keep(tun), group="tunnels", exit_on_error=False)
        return tun

    async def _keep(self, tun: OpenTunnel) -> None:
        ctx = self._context(_TunnelOutput(tun, self._log))
        try:
            await dispatch(ctx, ["tunnel", tun.instance, f"{tun.local_port}:{tun.remote_port}"])
        except CloudshError as exc:
            tun.status = "failed"
            self._log(f"tunnel to {tun.instance}:{tun.remote_port} failed: {exc}", "error")
        except asyncio.CancelledError:
            tun.status = "closed"
            raise

    def close(self, key: tuple[str, int]) -> None:
        tun = self.tunnels.pop(key, None)
        if tun and tun.worker:
            tun.worker.cancel()
            self._log(f"closed {tun.url} -> {tun.instance}:{tun.remote_port}", "info")

    def close_all(self) -> None:
        for key in list(self.tunnels):
            self.close(key)
