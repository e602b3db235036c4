"""The box view (Enter on a box): everything `show NAME` says about it, with the Instances
pane's keys acting on it, and one key each to copy its address and its ssh command.

The record loads in a worker (`ops.show.box_record`, the one `show` prints) and loads
again when the app's listing sees the box change (after a stop, a resize, a new address).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from cloudsh.commands.registry import REGISTRY
from cloudsh.commands.views import box_sections
from cloudsh.errors import CloudshError
from cloudsh.tui.instances import InstanceActions, InstancesPane
from cloudsh.tui.messages import WorkerFailed
from cloudsh.tui.state import BoxState, InstanceRow

if TYPE_CHECKING:
    from cloudsh.tui.host import AppHost

#: The Instances pane's keys that act on one box: the same keys, ids and actions here.
BOX_ACTIONS = ("connect", "tunnel", "resize", "freeze", "start_stop", "terminate", "ipython")
#: What in the listing, when it changes, makes the view load again.
WATCHED = ("state", "type", "public_ip", "market")


@dataclass
class BoxLoaded(Message):
    """`show`'s record of the box on view."""

    record: dict[str, Any]


def record_view(rec: dict[str, Any]) -> Group:
    """`show`'s sections: the first as a grid of labels and values (a long value, such as
    the ssh command, wraps under its value), the others under bold titles."""
    [(_, head), *rest] = box_sections(rec)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for line in head:
        label, _, value = line.partition(" ")
        grid.add_row(label, value.lstrip())
    text = Text()
    for title, lines in rest:
        text.append(f"\n{title}\n", style="bold")
        text.append("".join(f"  {line}\n" for line in lines))
    text.rstrip()
    return Group(grid, text)


class BoxScreen(Screen[None]):
    DEFAULT_CSS = """
    #box-pane { height: 1fr; padding: 0 1; border: round $accent; border-title-style: bold; }
    #box-pane > Static { width: 100%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        # The footer shows the pane's keys (at 120 columns there is room for no more);
        # the view's own keys are named in its border.
        *(b for b in Binding.make_bindings(InstancesPane.BINDINGS) if b.id in BOX_ACTIONS),
        Binding("escape", "close", "Back", id="box_back", show=False, tooltip="Back to the instances"),
        Binding("a", "copy('address')", "Copy IP", id="box_copy_address", show=False,
                tooltip="Copy the box's address"),
        Binding("y", "copy('ssh')", "Copy ssh", id="box_copy_ssh", show=False,
                tooltip="Copy the ssh command that reaches it"),
        Binding("ctrl+r", "reload", "Reload", id="box_reload", show=False, tooltip="Load the box's details again"),
    ]

    def __init__(self, row: InstanceRow, record: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.row = row
        self.record = record

    @property
    def cloud_app(self) -> AppHost:
        return cast("AppHost", self.app)

    @property
    def actions(self) -> InstanceActions:
        return InstanceActions(self.cloud_app)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="box-pane"):
            yield Static(f"loading {self.row.label}…", id="box-body")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        pane = self.query_one("#box-pane")
        pane.border_title = f"Box {self.row.label}"
        pane.border_subtitle = "a: copy address · y: copy ssh command · esc: back"
        if self.record is not None:
            self.show(self.record)
        else:
            self.action_reload()
        self.set_interval(1.0, self._follow_listing)

    def show(self, rec: dict[str, Any]) -> None:
        self.record = rec
        self.row = InstanceRow.from_record({**rec, "jobs": [j["id"] for j in rec["jobs"]]})
        self.query_one("#box-body", Static).update(record_view(rec))

    def on_box_loaded(self, message: BoxLoaded) -> None:
        self.show(message.record)

    # -- loading ----------------------------------------------------------------------

    def action_reload(self) -> None:
        self._load(self.row.handle, self._tunnels())

    def _tunnels(self) -> list[dict[str, Any]]:
        names = (self.row.handle, self.row.label, self.row.id)
        return [
            {"local_port": t.local_port, "remote_port": t.remote_port, "url": t.url, "status": t.status}
            for (box, _), t in self.cloud_app.tunnels.tunnels.items() if box in names
        ]

    @work(exclusive=True, group="box-view", name="box view", exit_on_error=False)
    async def _load(self, handle: str, tunnels: list[dict[str, Any]]) -> None:
        from cloudsh.ops.show import box_record

        backend = await self.cloud_app.connected()
        self.post_message(BoxLoaded(await box_record(backend, handle, tunnels=tunnels)))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.group == "box-view":
            exc = event.worker.error
            if self.record is None:
                why = str(exc) if isinstance(exc, CloudshError) else "an unexpected error (see the activity log)"
                self.query_one("#box-body", Static).update(f"cannot load {self.row.label}: {why}")
            self.app.post_message(WorkerFailed(event.worker))  # to the app's one error route

    def _follow_listing(self) -> None:
        """The listing saw the box change (an action finished, EC2 moved it on): load again.
        The app's tunnels to it are shown as they change (no cloud call)."""
        if self.record is None:
            return
        now = next((r for r in self.cloud_app.state.records if r["id"] == self.row.id), None)
        if now is not None and any(now.get(k) != self.record.get(k) for k in WATCHED):
            self.record = {**self.record, **{k: now.get(k) for k in WATCHED}}  # once per change
            self.action_reload()
        elif self.record.get("tunnels") is not None and (tunnels := self._tunnels()) != self.record["tunnels"]:
            self.show({**self.record, "tunnels": tunnels})

    # -- keys -------------------------------------------------------------------------

    def action_close(self) -> None:
        if self.app.screen is self:  # a second escape in one burst must not pop the app's screen
            self.dismiss(None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "freeze" or "freeze" in REGISTRY.commands

    def action_connect(self) -> None:
        self.actions.connect(self.row)

    def action_tunnel(self, port: int = 8888) -> None:
        self.actions.tunnel(self.row, port)

    def action_resize(self) -> None:
        self.actions.resize(self.row)

    def action_freeze(self) -> None:
        self.actions.freeze(self.row)

    def action_start_stop(self) -> None:
        self.actions.start_stop(self.row)

    def action_terminate(self) -> None:
        self.actions.terminate(self.row)

    def action_ipython(self) -> None:
        self.actions.ipython(self.row)

    def action_copy(self, what: str) -> None:
        rec = self.record or {}
        if what == "address":
            value, said = rec.get("public_ip") or self.row.public_ip or rec.get("private_ip"), "address"
        else:
            value, said = rec.get("ssh_command"), "ssh command"
        if not value:
            why = ("it is not running" if self.row.state is not BoxState.RUNNING
                   else "it does not answer SSH yet" if self.row.managed
                   else "cloudsh did not launch it: `c` connects, letting this machine in first")
            self.notify(f"{self.row.label} has no {said} to copy: {why}", severity="warning")
            return
        self.app.copy_to_clipboard(value)
        self.notify(f"copied {said} of {self.row.label}: {value}", title="clipboard")
