"""Modal dialogs, each a `ModalScreen[T]` that dismisses with its answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, OptionList, Static
from textual.widgets.option_list import Option

from cloudsh.commands.views import money
from cloudsh.models import InstanceType, Price, hourly_cost
from cloudsh.ops.background import BackgroundTunnel
from cloudsh.tui.dialog import Dialog
from cloudsh.tui.state import BoxState, InstanceRow

if TYPE_CHECKING:
    from cloudsh.tui.tunnels import OpenTunnel, TunnelManager


class ConfirmScreen(Dialog[bool]):
    """Yes/no on a destructive action; the question says what will be lost."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm_no"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", danger: bool = True) -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="confirm"):
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button(f"{self.yes_label} (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button("No (n)", id="no", variant="default")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class ResizeScreen(Dialog[str | None]):
    """Pick the new type: GPUs and what the box costs per hour now vs after."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Cancel", id="resize_cancel"),
        Binding("g", "gpu_only", "GPU only", id="resize_gpu_only"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, row: InstanceRow, rows: Sequence[tuple[InstanceType, Price | None]]) -> None:
        super().__init__()
        self.row = row
        self.rows = list(rows)
        self.gpu_only = True
        self._shown: list[str] = []

    def compose(self) -> ComposeResult:
        r = self.row
        now = r.price_per_hour
        with Vertical(id="dialog", classes="resize"):
            yield Static(
                Text.assemble(
                    ("Resize ", "bold"), (r.label, "bold"),
                    f"  {r.type} {r.gpus or 'no GPU'}, {r.market}, {money(now)} now",
                    f", image {r.image}" if r.image else "",
                ),
                id="resize-title",
            )
            yield DataTable(id="resize-table", cursor_type="row", zebra_stripes=True)
            note = "It will be stopped, changed and started again." if r.state is BoxState.RUNNING else "It is not running: only its type changes."
            if r.image and "nvidia" not in r.image and r.state is BoxState.RUNNING:
                note += " It has no NVIDIA driver: a GPU type gets one installed first."
            yield Static(f"enter: resize · g: GPU/all types · esc: cancel.  {note}", id="resize-help")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        for key, label in (("type", "Type"), ("gpus", "GPUs"), ("vcpus", "vCPU"), ("mem", "Mem"),
                           ("after", "$/h after"), ("delta", "Change")):
            t.add_column(label, key=key)
        self._fill()
        t.focus()

    def _fill(self) -> None:
        t = self.query_one(DataTable)
        t.clear()
        self._shown = []
        now = self.row.price_per_hour
        for it, price in self.rows:
            if it.name == self.row.type or (self.gpu_only and not it.gpu_count):
                continue
            after = hourly_cost(price, self.row.market, self.row.az)
            if after is not None and now is not None:
                delta = after - now
                change = Text(("+" if delta >= 0 else "-") + money(abs(delta)), style="red" if delta > 0 else "green")
            else:
                change = Text("-")
            t.add_row(it.name, it.gpus or "-", str(it.vcpus), f"{it.memory_gib:g}G", money(after), change, key=it.name)
            self._shown.append(it.name)

    def action_gpu_only(self) -> None:
        self.gpu_only = not self.gpu_only
        self._fill()

    def action_cursor_down(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(DataTable).action_cursor_up()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(event.row_key.value))


class PortScreen(Dialog[str | None]):
    """Ask for a port forward spec (`8888` or `9000:8888`)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, box: str) -> None:
        super().__init__()
        self.box = box

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="port"):
            yield Static(f"Forward which port of {self.box}?  PORT or LOCAL:REMOTE (e.g. 6006, 9000:8888)")
            yield Input(placeholder="8888", id="port-input")

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)


class TunnelsScreen(Dialog[None]):
    """Open port forwards with their local URL; close one, open another."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back", id="tunnels_back"),
        Binding("d,delete", "close_tunnel", "Close tunnel", id="tunnels_close"),
        Binding("a", "add", "Add port", id="tunnels_add"),
        Binding("o", "open_url", "Open in browser", id="tunnels_open"),
    ]

    def __init__(self, manager: TunnelManager, box: str | None) -> None:
        super().__init__()
        self.manager = manager
        self.box = box

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="tunnels"):
            yield Static("Tunnels", id="tunnels-title")
            yield DataTable(id="tunnels-table", cursor_type="row")
            yield Static("a: forward another port of the highlighted box · o: open in the browser · d: close · esc: back",
                         id="tunnels-help")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        for key, label in (("url", "Local URL"), ("box", "Box"), ("remote", "Remote port"), ("status", "Status")):
            t.add_column(label, key=key)
        self.manager.refresh_background()
        self.render_tunnels()
        self.set_interval(0.5, self.render_tunnels)
        self.set_interval(2.0, self.manager.refresh_background)

    def rows(self) -> list[OpenTunnel | BackgroundTunnel]:
        """The app's own tunnels, then the background keeper's."""
        return [*self.manager.tunnels.values(), *self.manager.background]

    def render_tunnels(self) -> None:
        t = self.query_one(DataTable)
        row = t.cursor_row
        t.clear()
        for tun in self.rows():
            if isinstance(tun, BackgroundTunnel):
                status = f"{tun.state} · background · {tun.moved_text}"
                t.add_row(tun.jupyter or tun.url, tun.box, str(tun.remote), status, key=f"bg:{tun.box}:{tun.local}")
            else:
                t.add_row(tun.jupyter or tun.url, tun.instance, str(tun.remote_port), tun.status, key=f"{tun.instance}:{tun.local_port}")
        if not t.row_count:
            t.add_row("no tunnels open", "", "", "", key="-")
        else:
            t.move_cursor(row=min(max(row, 0), t.row_count - 1), animate=False)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_close_tunnel(self) -> None:
        t = self.query_one(DataTable)
        rows = self.rows()
        if 0 <= t.cursor_row < len(rows):
            tun = rows[t.cursor_row]
            if isinstance(tun, BackgroundTunnel):
                self.manager.close_background(tun)
            else:
                self.manager.close((tun.instance, tun.local_port))
            self.render_tunnels()

    def action_open_url(self) -> None:
        """The highlighted tunnel's URL (a Jupyter server's with its token) in the browser."""
        from cloudsh.ops.jupyter import open_in_browser

        rows = self.rows()
        row = self.query_one(DataTable).cursor_row
        if not 0 <= row < len(rows):
            return
        url = rows[row].jupyter or rows[row].url

        def browse() -> None:  # a thread: starting a browser may take a while
            self.app.call_from_thread(self.notify, open_in_browser(url), title="tunnel")

        self.run_worker(browse, thread=True, exit_on_error=False)

    def action_add(self) -> None:
        if not self.box:
            self.notify("highlight a box in the Instances pane first", severity="warning")
            return
        box = self.box

        def opened(spec: str | None) -> None:
            if spec:
                self.manager.open_spec(box, spec)
                self.render_tunnels()

        self.app.push_screen(PortScreen(box), opened)


class HelpScreen(Dialog[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close", id="help_close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[tuple[str, str, str]]]], commands: str) -> None:
        super().__init__()
        self.sections = sections  # (title, [(keys, what they do, name in the `keys` setting)])
        self.commands = commands

    def compose(self) -> ComposeResult:
        width = max(len(k) for _, keys in self.sections for k, _, _ in keys)
        said = max(len(d) for _, keys in self.sections for _, d, _ in keys)
        text = Text()
        for title, keys in self.sections:
            text.append(f"{title}\n", style="bold")
            for k, d, name in keys:
                text.append(f"  {k.ljust(width)}  {d.ljust(said)}  ")
                text.append(f"{name}\n", style="dim")
            text.append("\n")
        text.append("Keys are yours to change: [cloudsh.keys] in config.toml, by the dim names.\n\n", style="dim")
        text.append("Commands", style="bold")
        text.append(" (type ")
        text.append(":", style="bold")
        text.append(f" then one of these)\n{self.commands}")
        with Vertical(id="dialog", classes="help"):
            yield Static(text, id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)


class RegionScreen(Dialog[str | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, regions: Sequence[str], current: str) -> None:
        super().__init__()
        self.regions = list(regions)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="region"):
            yield Static("Switch region")
            yield OptionList(*(Option(r + ("  (current)" if r == self.current else ""), id=r) for r in self.regions))

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        if self.current in self.regions:
            ol.highlighted = self.regions.index(self.current)
        ol.focus()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
