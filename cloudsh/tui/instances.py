"""The Instances pane: one row per box, `/` to filter, `o` to sort, and single keys for
what people do to the highlighted box (connect, tunnel, resize, freeze, start/stop,
terminate, IPython).

The pane owns those keys; what they do is `InstanceActions`, which ends each in a
command of the registry (`run_command`), so progress, confirmations and refusals are
the CLI's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from cloudsh.commands.registry import REGISTRY
from cloudsh.commands.views import duration, money
from cloudsh.errors import CloudshError
from cloudsh.models import INTERRUPTED_HINT, hourly_cost
from cloudsh.ops.owners import check_acts_on
from cloudsh.tui.messages import IdleStatusLoaded, WorkerFailed
from cloudsh.tui.screens import ConfirmScreen, ResizeScreen
from cloudsh.tui.state import BoxState, IdleColumn, InstanceRow
from cloudsh.tui.widgets import Fields, LineTable

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend
    from cloudsh.tui.host import AppHost

STATE_STYLES = {
    BoxState.RUNNING: "bold green",
    BoxState.PENDING: "bold yellow",
    BoxState.STOPPING: "bold yellow",
    BoxState.SHUTTING_DOWN: "bold red",
    BoxState.STOPPED: "dim",
    BoxState.TERMINATED: "dim strike",
}
INSTANCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"),
    ("type", "Type"),
    ("gpus", "GPUs"),
    ("image", "Image"),
    ("state", "State"),
    ("market", "Market"),
    ("price", "$/h"),
    ("uptime", "Uptime"),
    ("cost", "Cost"),
    ("idle", "Idle stop"),
    ("public_ip", "Public IP"),
    ("id", "ID"),
)
SORT_KEYS: dict[str, Callable[[InstanceRow], Any]] = {
    "name": lambda r: (r.name or "~", r.id),
    "state": lambda r: (r.state, r.name or "~"),
    "type": lambda r: (r.type, r.name or "~"),
    "$/h": lambda r: (-(r.price_per_hour or 0.0), r.name or "~"),
    "uptime": lambda r: (-(r.uptime_s or 0), r.name or "~"),
}


#: How the pane marks a box cloudsh did not launch (as `ls` does, with whose it looks like).
FOREIGN_STYLE = "italic yellow"


#: The idle column's styles, by how its text begins (`ops.idle.short`).
IDLE_STYLES = {"stops": "yellow", "busy": "green", "off": "dim", "?": "red"}


def instance_fields(row: InstanceRow, idle: str = "-") -> Fields:
    """An instance's row, in INSTANCE_COLUMNS order; `idle`: its idle column."""
    state = row.state
    name = row.name or "-"
    return (
        (name, "") if row.managed else (f"{name}* ({row.owner or 'not cloudsh'}'s)", FOREIGN_STYLE),
        (row.type, ""),
        (f"{row.gpus} (no driver)", "yellow") if row.gpu_driver is False else (row.gpus or "-", ""),
        (row.image or "-", "dim"),
        (f"{state}…" if state.transitional else row.status if row.interrupted else str(state),
         "yellow" if row.interrupted else STATE_STYLES.get(state, "")),
        (row.market, "magenta" if row.market == "spot" else ""),
        (money(row.price_per_hour, ""), ""),
        (duration(row.uptime_s), ""),
        (money(row.cost_so_far, ""), ""),
        (idle, IDLE_STYLES.get(idle.split(" ")[0].rstrip(":"), "dim")),
        (row.public_ip or "-", ""),
        (row.id, ""),
    )


class InstanceActions:
    """What the Instances pane's keys do to a box, through the app's commands and dialogs."""

    def __init__(self, app: AppHost) -> None:
        self.app = app

    def refused(self, row: InstanceRow, verb: str) -> bool:
        """Whether `ops.owners` refuses `verb` by this key: a destructive key never acts on
        a box cloudsh did not launch (the user names it by its id on the command line)."""
        try:
            check_acts_on([row], verb)
        except CloudshError as exc:
            self.app.log_line(f"✗ {verb} {row.label}: {exc}", "error")
            self.app.notify(str(exc), title=f"{verb} {row.label} refused", severity="error", timeout=10)
            return True
        return False

    def connect(self, row: InstanceRow) -> None:
        self.app.run_command(["connect", row.handle], f"connect {row.label}")

    def tunnel(self, row: InstanceRow, port: int) -> None:
        tun = self.app.tunnels.open(row.handle, port, port)
        self.app.notify(f"{tun.url} -> {row.label}:{port}  (T lists tunnels)", title="tunnel")

    def resize(self, row: InstanceRow) -> None:
        price_rows = self.app.state.price_rows
        if not price_rows:
            self.app.notify("prices are still loading; try again in a moment", severity="warning")
            return
        if self.refused(row, "resize"):
            return
        box = row.handle

        def run(new_type: str, ok: bool | None = True) -> None:
            if ok:
                self.app.run_command(["resize", box, new_type, "--yes"], f"resize {box} to {new_type}")

        def chosen(picked: str | None) -> None:
            if not picked:
                return
            after = next((hourly_cost(p, row.market, row.az) for t, p in price_rows if t.name == picked), None)
            limit = self.app.backend.settings.confirm_above_per_hour if self.app.backend else 3.0
            if after is not None and after > limit:  # the price gate of `resize`, as a dialog
                question = f"{picked} costs {money(after)}, above your ${limit:g}/h threshold. Resize {row.label} to it?"
                self.app.push_screen(ConfirmScreen(question), functools.partial(run, picked))
            else:
                run(picked)

        self.app.push_screen(ResizeScreen(row, price_rows), chosen)

    def freeze(self, row: InstanceRow) -> None:
        if "freeze" in REGISTRY.commands and not self.refused(row, "freeze"):
            self.app.run_command(["freeze", row.handle], f"freeze {row.label}")

    def start_stop(self, row: InstanceRow) -> None:
        box = row.label
        if row.state in (BoxState.RUNNING, BoxState.PENDING):
            if not self.refused(row, "stop"):
                self.app.run_command(["stop", row.handle], f"stop {box}")
        elif row.interrupted:  # only EC2 starts it; say why and what else there is
            self.app.notify(f"{row.status}. {INTERRUPTED_HINT.format(name=box)}", title=f"{box} is interrupted",
                            severity="warning", timeout=15)
        elif row.state is BoxState.STOPPED:
            self.app.run_command(["start", row.handle], f"start {box}")
        else:
            self.app.notify(f"{box} is {row.state}; wait until it settles", severity="warning")

    def terminate(self, row: InstanceRow) -> None:
        # The command itself asks, through the app's confirmation dialog, listing what will be lost.
        if not self.refused(row, "terminate"):
            self.app.run_command(["terminate", row.handle], f"terminate {row.label}")

    def ipython(self, row: InstanceRow | None) -> None:
        # On the app, so its failure takes the app's one error route.
        self.app.run_worker(self._ipython(row.id if row else None), name="IPython", group="ipython",
                            exclusive=True, exit_on_error=False)

    async def _ipython(self, box_id: str | None) -> None:
        try:
            namespace = await asyncio.to_thread(self._ipython_namespace, box_id)
            await self.app.handoff.ipython(namespace)
        finally:
            self.app.refresh_instances()

    def _ipython_namespace(self, box_id: str | None) -> dict[str, Any]:
        # A Backend of its own: the API runs its own event loop, and SSH connections
        # belong to the loop that opened them.
        from cloudsh.api import Cloud
        from cloudsh.ipython import build_namespace

        cloud = Cloud(backend=self.app.backend_factory())
        namespace = build_namespace(cloud)
        if box_id:
            # Picked from the listing, not looked up by id: highlighting a box cloudsh did
            # not launch is no naming of it by its id (`ops.owners`). If the box went away
            # meanwhile, `cloud` is still there.
            with contextlib.suppress(CloudshError):
                found = [i for i in cloud.instances() if i.id == box_id]
                if found:
                    namespace["box"] = found[0]
        return namespace


class InstancesTable(LineTable):
    """One row per instance, keyed by id so the cursor and rows survive refreshes."""

    HEADER = tuple(label for _, label in INSTANCE_COLUMNS)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        # Enter only, not a click: a click highlights a row, as everywhere else in the app.
        Binding("enter", "open_box", "Box view", id="box_view", show=False,
                tooltip="Everything about the highlighted box, with its keys"),
    ]

    def action_open_box(self) -> None:
        if isinstance(self.parent, InstancesPane):
            self.parent.action_open_box()


@dataclass
class BoxWanted(Message):
    """Enter on a box: the app opens its box view (`tui/box.py`)."""

    row: InstanceRow


class InstancesPane(Vertical):
    """The Instances pane: table, `/` filter, sorting, and the keys acting on the
    highlighted box. Keeps every row, shows a subset."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "connect", "Connect", id="connect", tooltip="SSH into the highlighted box"),
        Binding("t", "tunnel", "Jupyter", id="tunnel", tooltip="Forward localhost:8888 to the box (Jupyter, with its token)"),
        Binding("r", "resize", "Resize", id="resize", tooltip="Change the box's type, e.g. add a GPU"),
        Binding("f", "freeze", "Freeze", id="freeze", tooltip="Save the box as an image (AMI)"),
        Binding("s", "start_stop", "Start/Stop", id="start_stop", tooltip="Start a stopped box or stop a running one"),
        Binding("x", "terminate", "Terminate", id="terminate", tooltip="Terminate the box (asks first)"),
        Binding("i", "ipython", "IPython", id="ipython", tooltip="IPython with `cloud` and `box` ready"),
        Binding("slash", "filter", "Filter", id="filter", show=False, tooltip="Filter instances by name, type or state"),
        Binding("o", "sort", "Sort", id="sort", show=False, tooltip="Sort by the next column"),
    ]

    sort_key: reactive[str] = reactive("name")

    def __init__(self, actions: InstanceActions, **kw: Any) -> None:
        super().__init__(**kw)
        self.actions = actions
        self.rows: tuple[InstanceRow, ...] = ()
        self.filter_text = ""
        self.idle = IdleColumn()

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: name, type, state…", id="instances-filter", classes="hidden")
        yield InstancesTable(id="instances-table")
        yield Static("", id="instances-empty")

    @property
    def table(self) -> InstancesTable:
        return self.query_one(InstancesTable)

    def show(self, rows: tuple[InstanceRow, ...]) -> None:
        self.rows = rows
        self._render_rows()

    def highlighted(self) -> InstanceRow | None:
        iid = self.table.highlighted_key()
        return next((r for r in self.rows if r.id == iid), None) if iid else None

    def _visible(self) -> list[InstanceRow]:
        needle = self.filter_text.lower()
        rows = list(self.rows)
        if needle:
            rows = [r for r in rows if needle in f"{r.name} {r.id} {r.type} {r.state} {r.market} {r.gpus} "
                    f"{r.owner or ''} {self.idle.text(r)}".lower()]
        return sorted(rows, key=SORT_KEYS[self.sort_key])

    def _render_rows(self) -> None:
        """Show `rows` through the filter and sort, then ask the boxes shown that are due
        for their idle status (`IdleColumn`)."""
        rows = self._visible()
        self.table.show_rows([(r.id, (r, self.idle.text(r))) for r in rows], lambda shown: instance_fields(*shown))
        backend = self.actions.app.backend
        if backend is not None and (ids := self.idle.due(rows, time.monotonic())):
            self.run_worker(self._ask_idle(backend, ids), group="idle", exit_on_error=False)
        empty = self.query_one("#instances-empty", Static)
        if not self.rows:
            empty.update("No instances. Launch one with  :launch NAME  (add --type g5.xlarge for a GPU).")
        elif not rows:
            empty.update(f"No instance matches {self.filter_text!r}.")
        else:
            empty.update("")
        empty.display = not rows
        title = "Instances"
        if self.filter_text:
            title += f" /{self.filter_text} ({len(rows)} of {len(self.rows)})"
        if self.sort_key != "name":
            title += f" ↓{self.sort_key}"
        self.border_title = title

    async def _ask_idle(self, backend: Backend, ids: list[str]) -> None:
        from cloudsh.ops.idle import idle_column

        texts: dict[str, str] = {}
        try:
            texts = await idle_column(backend, ids)
        except CloudshError:
            pass  # each shows `?` and is asked again after IDLE_STATUS_S
        finally:
            self.post_message(IdleStatusLoaded({iid: texts.get(iid, "?") for iid in ids}))

    def on_idle_status_loaded(self, message: IdleStatusLoaded) -> None:
        message.stop()
        self.idle.took(message.texts, time.monotonic())
        self._render_rows()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "idle" and event.state is WorkerState.ERROR:
            self.post_message(WorkerFailed(event.worker))  # to the app's one error route

    def watch_sort_key(self) -> None:
        if self.is_mounted:
            self._render_rows()

    # -- keys ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "freeze":
            return "freeze" in REGISTRY.commands
        return True

    def _row(self) -> InstanceRow | None:
        row = self.highlighted()
        if row is None:
            self.notify("no instance highlighted; launch one with  :launch NAME", severity="warning")
        return row

    def action_connect(self) -> None:
        if row := self._row():
            self.actions.connect(row)

    def action_tunnel(self, port: int = 8888) -> None:
        if row := self._row():
            self.actions.tunnel(row, port)

    def action_resize(self) -> None:
        if row := self._row():
            self.actions.resize(row)

    def action_freeze(self) -> None:
        if row := self._row():
            self.actions.freeze(row)

    def action_start_stop(self) -> None:
        if row := self._row():
            self.actions.start_stop(row)

    def action_terminate(self) -> None:
        if row := self._row():
            self.actions.terminate(row)

    def action_ipython(self) -> None:
        self.actions.ipython(self.highlighted())

    def action_open_box(self) -> None:
        if row := self._row():
            self.post_message(BoxWanted(row))

    def action_filter(self) -> None:
        box = self.query_one("#instances-filter", Input)
        box.remove_class("hidden")
        box.focus()

    def action_sort(self) -> None:
        keys = list(SORT_KEYS)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]

    @on(Input.Changed, "#instances-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value.strip()
        self._render_rows()

    @on(Input.Submitted, "#instances-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value:
            event.input.add_class("hidden")
        self.table.focus()

    def key_escape(self) -> None:
        box = self.query_one("#instances-filter", Input)
        if box.has_focus:
            box.value = ""
            box.add_class("hidden")
            self.table.focus()


__all__ = ["BoxWanted", "InstanceActions", "InstancesPane", "InstancesTable", "instance_fields"]
