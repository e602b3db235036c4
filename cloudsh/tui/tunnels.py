"""Port forwards the app keeps open, each a `TunnelKeeper` (the one behind `cloudsh
tunnel`) running in a worker, so it reconnects the same way; its events set the status
the tunnels view shows. Cancelling the worker closes the tunnel.

The view also lists the background tunnels (`tunnel NAME PORT --background`), read from
the per-user keeper process, so they show after the app is quit and reopened."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from textual.worker import Worker

from cloudsh.commands.registry import Context
from cloudsh.commands.remote import parse_forward
from cloudsh.config import Settings
from cloudsh.errors import CloudshError
from cloudsh.ops.background import BackgroundTunnel, close_background, list_background
from cloudsh.ops.tunnels import (
    TunnelEvent,
    TunnelKeeper,
    TunnelLost,
    TunnelOpened,
    TunnelReconnecting,
    state_after,
)


@dataclass
class OpenTunnel:
    instance: str
    local_port: int
    remote_port: int
    status: str = "opening"
    worker: Worker[Any] | None = field(default=None, repr=False)
    #: The URL, with its token, of the Jupyter server it reaches, if any.
    jupyter: str = ""

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local_port}/"


class TunnelManager:
    def __init__(
        self,
        run_worker: Callable[..., Worker[Any]],
        context: Callable[[Any], Context],
        log: Callable[[str, str], None],
        settings: Settings,
    ) -> None:
        self._run_worker = run_worker
        self._context = context
        self._log = log
        self.settings = settings
        self.tunnels: dict[tuple[str, int], OpenTunnel] = {}
        #: What the background keeper held at the last `refresh_background`.
        self.background: list[BackgroundTunnel] = []

    def refresh_background(self) -> None:
        """Ask the background keeper what it holds (in a worker); `background` follows."""
        self._run_worker(self._list_background(), group="background-tunnels", exclusive=True, exit_on_error=False)

    async def _list_background(self) -> None:
        try:
            self.background = await list_background(self.settings)
        except (CloudshError, OSError) as exc:
            self.background = []
            self._log(f"background tunnels: {exc}", "error")

    def close_background(self, tun: BackgroundTunnel) -> None:
        async def close() -> None:
            try:
                await close_background(self.settings, tun.box, tun.local)
                self._log(f"closed {tun.url} -> {tun.box}:{tun.remote} ({tun.moved_text} moved)", "info")
            except (CloudshError, OSError) as exc:
                self._log(f"closing {tun.url}: {exc}", "error")
            await self._list_background()

        self.background = [t for t in self.background if t != tun]
        self._run_worker(close(), group="background-tunnels", exit_on_error=False)

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

    def _on_event(self, tun: OpenTunnel, event: TunnelEvent) -> None:
        where = f"{tun.instance}:{tun.remote_port}"
        tun.status = state_after(event)
        if isinstance(event, TunnelOpened):
            tun.jupyter = event.jupyter
            jupyter = f" · Jupyter: {event.jupyter} (T, o: open it)" if event.jupyter else ""
            self._log(f"tunnel {event.url} -> {event.box}:{event.remote}" + (" reopened" if event.again else "") + jupyter,
                      "done")
        elif isinstance(event, TunnelLost):
            self._log(f"tunnel {where}: connection lost ({event.reason}); reconnecting", "info")
        elif isinstance(event, TunnelReconnecting):
            self._log(f"tunnel {where}: {event.reason}", "info")

    async def _keep(self, tun: OpenTunnel) -> None:
        try:
            backend = self._context(None).backend
            keeper = TunnelKeeper(
                backend, tun.instance, [(tun.local_port, tun.remote_port)], on_event=lambda e: self._on_event(tun, e)
            )
            await keeper.run()
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
