"""Port forwards kept open: the one tunnel keeper behind `cloudsh tunnel`, the app's
tunnels and `box.tunnel(...)` in the Python API.

A `TunnelKeeper` opens local forwards to a box over SSH and keeps them: when the SSH
connection drops (the box stopped, the network broke) it looks the box up again (a
restarted box may have a new address), waits for it to answer and reopens every forward
on the same local port. It reports what happens as typed events through a callback, so
a front end shows them as it likes and none parses sentences.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudsh.errors import CloudshError, InvalidState, SSHError
from cloudsh.models import HostInfo, Instance
from cloudsh.ops import jupyter
from cloudsh.ops.reach import ssh_host

if TYPE_CHECKING:
    # boto3 underneath: for types only, so the app paints before it loads
    from cloudsh.services.backend import Backend
    from cloudsh.services.forward import Forward  # asyncssh costs ~100 ms to import: only for types

#: Seconds between attempts to reach a box that went away. A stopped box (nobody is
#: starting it) is looked at less and less often, up to `MAX_RETRY_S`.
RETRY_S = 2.0
MAX_RETRY_S = 30.0
#: States in which a box will not answer until someone starts it.
ASLEEP = ("stopped", "stopping")


@dataclass(frozen=True)
class TunnelOpened:
    """localhost:`local` forwards to `box`:`remote`; `again` after a reconnect. `jupyter`:
    the URL, with its token, of the Jupyter server on that port (`ops.jupyter`), if any."""

    box: str
    local: int
    remote: int
    again: bool = False
    jupyter: str = ""

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local}/"


@dataclass(frozen=True)
class TunnelLost:
    """The forwards to `box` stopped working; the keeper will reconnect."""

    box: str
    reason: str


@dataclass(frozen=True)
class TunnelReconnecting:
    """`box` cannot be reached yet (`reason`); the next attempt is in `retry_s` seconds.
    Sent when the reason changes, not at every attempt. `box_state` is the box's state
    (`stopped`: the keeper waits for someone to start it)."""

    box: str
    reason: str
    retry_s: float
    box_state: str = ""

    @property
    def asleep(self) -> bool:
        return self.box_state in ASLEEP


@dataclass(frozen=True)
class TunnelClosed:
    """The keeper stopped: closed on request, or `reason` (e.g. the box was terminated)."""

    box: str
    reason: str = ""


TunnelEvent = TunnelOpened | TunnelLost | TunnelReconnecting | TunnelClosed
OnTunnelEvent = Callable[[TunnelEvent], None]


def state_after(event: TunnelEvent) -> str:
    """A tunnel's state once `event` happened, as `tunnels` and the app's tunnels view say it:
    open, reconnecting, box stopped or closed."""
    if isinstance(event, TunnelOpened):
        return "open"
    if isinstance(event, TunnelReconnecting) and event.asleep:
        return "box stopped"
    return "closed" if isinstance(event, TunnelClosed) else "reconnecting"


def _ignore(_: TunnelEvent) -> None:
    """An `OnTunnelEvent` that shows nothing."""


class TunnelKeeper:
    """Forwards localhost ports to ports of one box, reopened whenever they drop.

    `await keeper.open()` opens them (its errors are the user's: unknown box, stopped
    box, port in use); then `await keeper.keep()` watches and reconnects until `close()`
    or cancellation. Create, open, keep and close on one event loop.
    """

    def __init__(
        self,
        backend: Backend,
        box: str,
        ports: Sequence[tuple[int, int]],
        *,
        on_event: OnTunnelEvent = _ignore,
        retry_s: float = RETRY_S,
    ) -> None:
        self.backend = backend
        self.box = box
        #: (local, remote) pairs; a local 0 becomes the port first picked, so a
        #: reconnect keeps the same URL.
        self.ports = list(ports)
        self.on_event = on_event
        self.retry_s = retry_s
        self.instance: Instance | None = None
        self.closed = False
        self._open: list[Forward] = []
        self._moved_before = 0
        #: local port -> the Jupyter URL through it, as found at the last opening.
        self.jupyter: dict[int, str] = {}

    @property
    def moved(self) -> int:
        """Bytes carried both ways so far, across reconnects."""
        return self._moved_before + sum(f.moved for f in self._open)

    @property
    def label(self) -> str:
        return self.instance.label if self.instance is not None else self.box

    async def _resolve(self) -> HostInfo:
        """Where the box answers now (looked up afresh: a restarted box may have moved)."""
        ec2 = self.backend.ec2
        self.instance = await (ec2.find(self.box) if self.instance is None else ec2.get_instance(self.instance.id))
        return await ssh_host(self.backend, self.instance)

    async def _open_all(self, again: bool) -> None:
        host = await self._resolve()
        opened: list[Forward] = []
        try:
            for local, remote in self.ports:
                opened.append(await self.backend.ssh.forward(host, local, remote))
        except BaseException:
            for f in opened:
                f.close()
            raise
        self.ports = [(f.local_port, remote) for f, (_, remote) in zip(opened, self.ports, strict=True)]
        self._open = opened
        self.jupyter = await jupyter.urls(self.backend, host, self.ports)  # a restarted server has a new token
        for f in opened:
            self.on_event(TunnelOpened(self.label, f.local_port, f.remote_port, again, self.jupyter.get(f.local_port, "")))

    async def open(self) -> list[TunnelOpened]:
        """Open every forward, or raise why not (nothing stays open then)."""
        await self._open_all(again=False)
        return [TunnelOpened(self.label, f.local_port, f.remote_port, jupyter=self.jupyter.get(f.local_port, ""))
                for f in self._open]

    async def keep(self) -> None:
        """Watch the forwards and reopen them when they drop, until `close()` or
        cancellation. Raises why it cannot go on (e.g. `InvalidState`: the box was
        terminated), after a `TunnelClosed` saying so."""
        reason = ""
        said, asleep_tries = "", 0
        try:
            while not self.closed:
                if self._open:
                    waits = [asyncio.ensure_future(f.wait_closed()) for f in self._open]
                    try:
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
                    if self.closed:
                        break
                    self._close_forwards()
                    self.on_event(TunnelLost(self.label, "the SSH connection dropped"))
                try:
                    await self._open_all(again=True)
                    said, asleep_tries = "", 0
                except (SSHError, InvalidState) as exc:
                    state = self.instance.state if self.instance is not None else ""
                    if state in ("terminated", "shutting-down"):
                        raise  # it will not come back
                    if state in ASLEEP:
                        why = "waiting for the box: it is stopped"  # (or stopping: said once)
                        delay = min(self.retry_s * 2**asleep_tries, MAX_RETRY_S)
                        asleep_tries += 1
                    else:
                        why, delay, asleep_tries = f"cannot reach it yet: {exc}", self.retry_s, 0
                    if why != said:
                        self.on_event(TunnelReconnecting(self.label, why, delay, state))
                        said = why
                    await asyncio.sleep(delay)
        except CloudshError as exc:
            reason = str(exc)
            raise
        finally:
            self._close_forwards()
            self.closed = True
            self.on_event(TunnelClosed(self.label, reason))

    async def run(self) -> None:
        """`open` then `keep`."""
        await self.open()
        await self.keep()

    def close(self) -> None:
        """Stop forwarding; a running `keep()` returns."""
        self.closed = True
        self._close_forwards()

    def _close_forwards(self) -> None:
        for f in self._open:
            f.close()
            self._moved_before += f.moved
        self._open = []
