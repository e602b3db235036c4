"""What the Python API hands back besides `models` records: tables that print aligned,
instance lists, and tunnel handles. Imported by `cloudsh.api`, which re-exports them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from cloudsh.ops.records import table
from cloudsh.ops.tunnels import (
    OnTunnelEvent,
    TunnelClosed,
    TunnelEvent,
    TunnelKeeper,
    TunnelLost,
    TunnelOpened,
    TunnelReconnecting,
)


class Listed(Protocol):
    """What a listing shows of a box (`cloudsh.api.Instance` has it)."""

    name: str
    id: str
    type: str
    state: str
    market: str
    public_ip: str | None
    #: False for a box cloudsh did not launch (marked `*` in the listing).
    managed: bool

    @property
    def label(self) -> str: ...

    def status(self) -> str:
        """The state as a person reads it (e.g. why an interrupted spot box waits)."""
        ...


class Table(list[dict[str, Any]]):
    """Records (plain dicts) that print as an aligned table."""

    columns: tuple[tuple[str, str], ...] = ()
    #: One line about the rows as a whole (e.g. why prices are missing); "" when none.
    note: str = ""

    def __init__(
        self, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]] = (), *, note: str = ""
    ) -> None:
        super().__init__(rows)
        self.columns = tuple(columns) or tuple((k, k.upper()) for k in (rows[0] if rows else {}))
        self.note = note

    def __repr__(self) -> str:
        tail = f"\n{self.note}" if self.note else ""
        if not self:
            return "(none)" + tail
        show = [{k: "-" if v is None or v == "" else v for k, v in r.items()} for r in self]
        return table(show, self.columns) + tail

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


L = TypeVar("L", bound=Listed)


class InstanceList(list[L]):
    """A list of instances that prints as a table."""

    def __repr__(self) -> str:
        if not self:
            return "(no instances)"
        rows = [
            {"name": (i.name or "-") + ("" if i.managed else "*"), "id": i.id, "type": i.type,
             "state": i.status(), "market": i.market, "ip": i.public_ip or "-"}
            for i in self
        ]
        cols = [("name", "NAME"), ("id", "ID"), ("type", "TYPE"), ("state", "STATE"), ("market", "MARKET"),
                ("ip", "PUBLIC IP")]
        return table(rows, cols)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def names(self) -> list[str]:
        """Each box's name (or id when it has none)."""
        return [i.label for i in self]


class TunnelHandle:
    """A port forward kept open until `.close()`, reconnected after its box stops and
    starts again: `.url`, `.jupyter` (a Jupyter server's URL with its token, or ''), `.state`
    ("open", "reconnecting", "closed"), `.events` (the
    `cloudsh.ops.tunnels` events so far); also a context manager."""

    def __init__(self, keeper: TunnelKeeper, on_event: OnTunnelEvent | None = None) -> None:
        self._keeper = keeper
        self._on_event = on_event
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.events: list[TunnelEvent] = []
        self.state = "opening"
        keeper.on_event = self._seen

    def _seen(self, event: TunnelEvent) -> None:
        self.events.append(event)
        if isinstance(event, TunnelOpened):
            self.state = "open"
        elif isinstance(event, TunnelLost | TunnelReconnecting):
            self.state = "reconnecting"
        elif isinstance(event, TunnelClosed):
            self.state = "closed"
        if self._on_event is not None:
            self._on_event(event)

    async def _start(self) -> TunnelHandle:
        """Open the forward, then keep it in a task on the running loop."""
        await self._keeper.open()
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._keeper.keep(), name=f"tunnel {self.url}")
        # A box terminated under the tunnel ends it; the reason is in `events`.
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self

    @property
    def local_port(self) -> int:
        return self._keeper.ports[0][0]

    @property
    def remote_port(self) -> int:
        return self._keeper.ports[0][1]

    @property
    def url(self) -> str:
        """`http://localhost:PORT/`"""
        return f"http://localhost:{self.local_port}/"

    @property
    def jupyter(self) -> str:
        """The URL, with its token, of the Jupyter server the forward reaches ('' if none)."""
        return self._keeper.jupyter.get(self.local_port, "")

    @property
    def closed(self) -> bool:
        return self._closing or self.state == "closed"

    def close(self) -> None:
        """Stop forwarding."""
        if self._closing:
            return
        self._closing = True
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if self._loop is None or here is self._loop:
            self._keeper.close()
        else:
            self._loop.call_soon_threadsafe(self._keeper.close)

    async def aclose(self) -> None:
        """Stop forwarding and wait until the keeper has let go of the port."""
        self.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def __enter__(self) -> TunnelHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.state
        return f"<Tunnel {self.url} -> {self._keeper.label}:{self.remote_port} {state}>"

