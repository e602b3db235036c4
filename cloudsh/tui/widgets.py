"""The panes. Attributes down, messages up: each widget has a `show(...)` that the app
calls with plain records, and posts messages when the user does something."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.message import Message
from textual.reactive import reactive
from textual.suggester import Suggester
from textual.widgets import DataTable, Input, RichLog, Sparkline, Static

from cloudsh.commands.complete import Completion, CompletionIndex, command_help, complete
from cloudsh.commands.views import duration, money
from cloudsh.models import Image, InstanceType, Price, Snapshot, Volume
from cloudsh.tui.data import image_month, snapshot_month, volume_month
from cloudsh.tui.volumes import STORAGE_BINDINGS

STATE_STYLES = {
    "running": "bold green",
    "pending": "bold yellow",
    "stopping": "bold yellow",
    "shutting-down": "bold red",
    "stopped": "dim",
    "terminated": "dim strike",
}
TRANSITIONAL = frozenset({"pending", "stopping", "shutting-down"})
#: Rows added at once when the instances table is rebuilt, then per event-loop turn.
FIRST_SLICE = 80
SLICE = 100
SLICE_PAUSE_S = 0.01


def state_cell(state: str) -> Text:
    label = f"{state}…" if state in TRANSITIONAL else state
    return Text(label, style=STATE_STYLES.get(state, ""), no_wrap=True, end="")


# -- status bar -----------------------------------------------------------------


class StatusBar(Horizontal):
    """Mode (SANDBOX or profile/region), burn rate, and whether data is fresh."""

    mode: reactive[str] = reactive("connecting…")
    burn: reactive[float | None] = reactive(None)
    freshness: reactive[str] = reactive("")

    def compose(self) -> ComposeResult:
        yield Static(id="status-mode")
        yield Static(id="status-burn")
        yield Static(id="status-fresh")

    def watch_mode(self, mode: str) -> None:
        self.query_one("#status-mode", Static).update(Text(f" {mode} ", style="bold reverse"))

    def watch_burn(self, burn: float | None) -> None:
        text = "burning -" if burn is None else f"burning {money(burn)}"
        self.query_one("#status-burn", Static).update(text)

    def watch_freshness(self, freshness: str) -> None:
        self.query_one("#status-fresh", Static).update(freshness)


# -- instances --------------------------------------------------------------------

INSTANCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Name"),
    ("type", "Type"),
    ("gpus", "GPUs"),
    ("state", "State"),
    ("market", "Market"),
    ("price", "$/h"),
    ("uptime", "Uptime"),
    ("cost", "Cost"),
    ("public_ip", "Public IP"),
    ("id", "ID"),
)
SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": lambda r: (r["name"] or "~", r["id"]),
    "state": lambda r: (r["state"], r["name"] or "~"),
    "type": lambda r: (r["type"], r["name"] or "~"),
    "$/h": lambda r: (-(r["price_per_hour"] or 0.0), r["name"] or "~"),
    "uptime": lambda r: (-(r["uptime_s"] or 0), r["name"] or "~"),
}


def cell(value: object, style: str = "") -> Text:
    """A plain cell. DataTable would parse a `str` as markup: slower (it dominates
    painting 1,000 rows) and wrong for a name with a `[` in it."""
    return Text(str(value), style=style, no_wrap=True, end="")


def instance_cells(rec: dict[str, Any]) -> dict[str, Text]:
    return {
        "name": cell(rec["name"] or "-"),
        "type": cell(rec["type"]),
        "gpus": cell(rec["gpus"] or "-"),
        "state": state_cell(rec["state"]),
        "market": cell(rec["market"], "magenta" if rec["market"] == "spot" else ""),
        "price": cell(money(rec["price_per_hour"], "")),
        "uptime": cell(duration(rec["uptime_s"])),
        "cost": cell(money(rec.get("cost_so_far"), "") if rec.get("cost_so_far") is not None else "-"),
        "public_ip": cell(rec["public_ip"] or "-"),
        "id": cell(rec["id"]),
    }


class InstancesTable(DataTable[Any]):
    """One row per instance, keyed by id so the cursor and rows survive refreshes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("c", "app.connect", "Connect", id="connect", tooltip="SSH into the highlighted box"),
        Binding("t", "app.tunnel", "Tunnel:8888", id="tunnel", tooltip="Forward localhost:8888 to the box (Jupyter)"),
        Binding("r", "app.resize", "Resize/GPU", id="resize", tooltip="Change the box's type, e.g. add a GPU"),
        Binding("f", "app.freeze", "Freeze", id="freeze", tooltip="Save the box as an image (AMI)"),
        Binding("s", "app.start_stop", "Start/Stop", id="start_stop", tooltip="Start a stopped box or stop a running one"),
        Binding("x", "app.terminate", "Terminate", id="terminate", tooltip="Terminate the box (asks first)"),
        Binding("i", "app.ipython", "IPython", id="ipython", tooltip="IPython with `cloud` and `box` ready"),
        Binding("slash", "filter", "Filter", id="filter", tooltip="Filter instances by name, type or state"),
        Binding("o", "sort", "Sort", id="sort", show=False, tooltip="Sort by the next column"),
    ]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in INSTANCE_COLUMNS:
            self.add_column(label, key=key)

    # The pane owns the filter and sort state; the table only has the focus.
    def action_filter(self) -> None:
        self.query_ancestor(InstancesPane).action_filter()

    def action_sort(self) -> None:
        self.query_ancestor(InstancesPane).action_sort()


@dataclass
class FilterChanged(Message):
    text: str


class InstancesPane(Vertical):
    """The Instances pane: table, `/` filter, sorting. Keeps every record, shows a subset."""

    sort_key: reactive[str] = reactive("name")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.records: list[dict[str, Any]] = []
        self.filter_text = ""
        self._shown: list[str] = []
        self._drawn: dict[str, dict[str, Any]] = {}
        self._filling = False

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: name, type, state…", id="instances-filter", classes="hidden")
        yield InstancesTable(id="instances-table")
        yield Static("", id="instances-empty")

    @property
    def table(self) -> InstancesTable:
        return self.query_one(InstancesTable)

    def show(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self._render_rows()

    def highlighted(self) -> dict[str, Any] | None:
        t = self.table
        if not self._shown or t.cursor_row < 0 or t.cursor_row >= len(self._shown):
            return None
        iid = self._shown[t.cursor_row]
        return next((r for r in self.records if r["id"] == iid), None)

    def _visible(self) -> list[dict[str, Any]]:
        needle = self.filter_text.lower()
        rows = self.records
        if needle:
            rows = [r for r in rows if needle in f"{r['name']} {r['id']} {r['type']} {r['state']} {r['market']} {r['gpus']}".lower()]
        return sorted(rows, key=SORT_KEYS[self.sort_key])

    def _render_rows(self) -> None:
        t = self.table
        rows = self._visible()
        ids = [r["id"] for r in rows]
        if ids == self._shown and not self._filling:
            # Same rows in the same order: update what changed, in place (no flicker;
            # cursor and scroll untouched). Unchanged records are skipped outright.
            changed = [r for r in rows if self._drawn.get(r["id"]) != r]
            self._start_fill(self._update_cells(changed))
        else:
            current = self._shown[t.cursor_row] if self._shown and 0 <= t.cursor_row < len(self._shown) else None
            t.clear()
            self._shown = []
            self._drawn = {}
            # The first screenful now, the rest in slices between event-loop turns:
            # DataTable measures every new cell (~0.3 ms each), so 1,000 rows at once
            # would freeze the app for a third of a second.
            self._add_rows(rows[:FIRST_SLICE])
            if current in ids[:FIRST_SLICE]:
                t.move_cursor(row=ids.index(current), animate=False)
            self._start_fill(self._add_rest(rows[FIRST_SLICE:], current, ids))
        empty = self.query_one("#instances-empty", Static)
        if not self.records:
            empty.update("No instances. Launch one with  :launch NAME  (add --type g5.xlarge for a GPU).")
        elif not rows:
            empty.update(f"No instance matches {self.filter_text!r}.")
        else:
            empty.update("")
        empty.display = not rows
        title = "Instances"
        if self.filter_text:
            title += f" /{self.filter_text} ({len(rows)} of {len(self.records)})"
        if self.sort_key != "name":
            title += f" ↓{self.sort_key}"
        self.border_title = title

    def _add_rows(self, rows: list[dict[str, Any]]) -> None:
        t = self.table
        for rec in rows:
            cells = instance_cells(rec)
            t.add_row(*(cells[k] for k, _ in INSTANCE_COLUMNS), key=rec["id"])
            self._shown.append(rec["id"])
            self._drawn[rec["id"]] = rec

    def _start_fill(self, job: Coroutine[Any, Any, None]) -> None:
        self._filling = True
        self.run_worker(job, group="instances-fill", exclusive=True, exit_on_error=False)

    async def _add_rest(self, rows: list[dict[str, Any]], current: str | None, ids: list[str]) -> None:
        for start in range(0, len(rows), SLICE):
            await asyncio.sleep(SLICE_PAUSE_S)
            self._add_rows(rows[start : start + SLICE])
        if current in ids and self.table.cursor_row != ids.index(current):
            self.table.move_cursor(row=ids.index(current), animate=False)
        self._filling = False

    async def _update_cells(self, rows: list[dict[str, Any]]) -> None:
        t = self.table
        for n, rec in enumerate(rows):
            if n and n % SLICE == 0:
                await asyncio.sleep(SLICE_PAUSE_S)
            old = self._drawn.get(rec["id"])
            old_cells = instance_cells(old) if old else {}
            for key, value in instance_cells(rec).items():
                if old_cells.get(key) != value:
                    t.update_cell(rec["id"], key, value)
            self._drawn[rec["id"]] = rec
        self._filling = False

    def watch_sort_key(self) -> None:
        if self.is_mounted:
            self._render_rows()

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




# -- prices -------------------------------------------------------------------------


class PricesTable(DataTable[Any]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "gpu_only", "GPU only", id="gpu_only", tooltip="Show only types with GPUs"),
        Binding("f", "family", "Family", id="family", tooltip="Show one family at a time"),
    ]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in (("type", "Type"), ("vcpus", "vCPU"), ("mem", "Mem"), ("gpus", "GPUs"),
                           ("od", "On-demand"), ("spot", "Spot"), ("save", "Save")):
            self.add_column(label, key=key)

    def action_gpu_only(self) -> None:
        pane = self.query_ancestor(PricesPane)
        pane.gpu_only = not pane.gpu_only

    def action_family(self) -> None:
        self.query_ancestor(PricesPane).next_family()


@dataclass
class TypeHighlighted(Message):
    instance_type: str


class PricesPane(Vertical):
    gpu_only: reactive[bool] = reactive(True)
    family: reactive[str] = reactive("")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: list[tuple[InstanceType, Price | None]] = []
        self.source = ""
        self.fetched_at: datetime | None = None
        self._shown: list[str] = []
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def compose(self) -> ComposeResult:
        yield PricesTable(id="prices-table")
        with Horizontal(id="spot-plot"):
            yield Static("", id="spot-label")
            yield Sparkline([], id="spot-sparkline", classes="hidden")
        yield Static("", id="prices-age")

    def show(self, rows: list[tuple[InstanceType, Price | None]], source: str, fetched_at: datetime | None) -> None:
        self.rows, self.source, self.fetched_at = rows, source, fetched_at
        self._render_rows()

    def show_history(self, instance_type: str, series: Sequence[float]) -> None:
        if instance_type != self.highlighted():
            return
        label = self.query_one("#spot-label", Static)
        spark = self.query_one("#spot-sparkline", Sparkline)
        if series:
            label.update(f"{instance_type} spot 48h {money(min(series), '')}–{money(max(series), '')} ")
        else:
            label.update(f"{instance_type}: no spot history ")
        spark.data = list(series)
        # Textual's sparkline divides by its width: keep it out of layout until it has data.
        spark.set_class(not series, "hidden")

    def highlighted(self) -> str | None:
        t = self.query_one(PricesTable)
        if not self._shown or not 0 <= t.cursor_row < len(self._shown):
            return None
        return self._shown[t.cursor_row]

    def families(self) -> list[str]:
        return sorted({t.family for t, _ in self.rows if t.gpu_count or not self.gpu_only})

    def next_family(self) -> None:
        fams = [""] + self.families()
        self.family = fams[(fams.index(self.family) + 1) % len(fams)] if self.family in fams else ""

    def watch_gpu_only(self) -> None:
        if self.is_mounted:
            self._render_rows()

    def watch_family(self) -> None:
        if self.is_mounted:
            self._render_rows()

    def _render_rows(self) -> None:
        t = self.query_one(PricesTable)
        rows = [(it, p) for it, p in self.rows if (it.gpu_count or not self.gpu_only) and (not self.family or it.family == self.family)]
        current = self.highlighted()
        t.clear()
        self._shown = []
        for it, p in rows:
            saving = p.spot_saving if p else None
            t.add_row(
                it.name, str(it.vcpus), f"{it.memory_gib:g}G", it.gpus or "-",
                money(p.on_demand if p else None, ""), money(p.spot if p else None, ""),
                Text(f"{saving:.0%}", style="green") if saving is not None else "-",
                key=it.name,
            )
            self._shown.append(it.name)
        if current in self._shown:
            t.move_cursor(row=self._shown.index(current), animate=False)
        title = "Prices" + (" · GPU" if self.gpu_only else "") + (f" · {self.family}" if self.family else "")
        self.border_title = title
        self._render_age()

    def _render_age(self) -> None:
        from cloudsh.commands.views import age

        if not self.rows:
            text = "loading prices…"
        else:
            text = f"prices {age(self.fetched_at, self.clock())}"
            if self.source:
                text += f" · {self.source}"
        self.query_one("#prices-age", Static).update(text)

    @on(DataTable.RowHighlighted, "#prices-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value:
            self.post_message(TypeHighlighted(str(event.row_key.value)))


# -- volumes, snapshots, images -------------------------------------------------------


class StorageTable(DataTable[Any]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        *STORAGE_BINDINGS,
    ]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in (("kind", "Kind"), ("name", "Name"), ("size", "Size"), ("state", "State"),
                           ("where", "Attached/From"), ("month", "$/month")):
            self.add_column(label, key=key)


class VolumesPane(Vertical):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.items: dict[str, Volume | Snapshot | Image] = {}

    def compose(self) -> ComposeResult:
        yield StorageTable(id="volumes-table")

    def highlighted(self) -> Volume | Snapshot | Image | None:
        t = self.query_one(StorageTable)
        if not t.row_count or not 0 <= t.cursor_row < t.row_count:
            return None
        key = t.coordinate_to_cell_key(Coordinate(t.cursor_row, 0)).row_key.value
        return self.items.get(str(key))

    @on(DataTable.RowHighlighted, "#volumes-table")
    def _row_changed(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.screen.refresh_bindings()  # the footer shows the keys of this kind of row

    def show(self, volumes: list[Volume], snapshots: list[Snapshot], images: list[Image],
             names: dict[str, str] | None = None) -> None:
        names = names or {}
        t = self.query_one(StorageTable)
        current = t.cursor_row
        # The cursor stays on the same volume, snapshot or image when rows come and go.
        was = self.highlighted()
        snaps = {s.id: s for s in snapshots}
        self.items = {**{v.id: v for v in volumes}, **snaps, **{i.id: i for i in images}}
        rows: list[tuple[str, tuple[Text, ...]]] = []
        total = 0.0
        for v in volumes:
            cost = volume_month(v)
            total += cost
            where = names.get(v.attached_to or "", v.attached_to or "-")
            rows.append((v.id, (cell("volume"), cell(v.name or v.id), cell(f"{v.size_gb} GB"), cell(v.state),
                                cell(where), cell(money(cost, "")))))
        for s in snapshots:
            cost = snapshot_month(s)
            total += cost
            rows.append((s.id, (cell("snapshot"), cell(s.name or s.id), cell(f"{s.size_gb} GB"), cell(s.state),
                                cell(s.volume_id), cell(money(cost, "")))))
        for img in images:
            rows.append((img.id, (cell("image"), cell(img.name or img.id), cell("-"), cell(img.state),
                                  cell(img.id), cell(money(image_month(img, snaps), "")))))
        t.clear()
        self.border_title = f"Volumes · {money(total, '/month')}"
        # Like the instances table: a screenful now, the rest in slices.
        for key, cells in rows[:FIRST_SLICE]:
            t.add_row(*cells, key=key)
        keys = [key for key, _ in rows]
        target = keys.index(was.id) if was is not None and was.id in keys else min(current, len(rows) - 1)
        if t.row_count:
            t.move_cursor(row=min(target, t.row_count - 1), animate=False)
        self.run_worker(self._add_rest(rows[FIRST_SLICE:], target), group="volumes-fill", exclusive=True,
                        exit_on_error=False)

    async def _add_rest(self, rows: list[tuple[str, tuple[Text, ...]]], target: int = -1) -> None:
        t = self.query_one(StorageTable)
        for start in range(0, len(rows), SLICE):
            await asyncio.sleep(SLICE_PAUSE_S)
            for key, cells in rows[start : start + SLICE]:
                t.add_row(*cells, key=key)
        if rows and FIRST_SLICE <= target < t.row_count:
            t.move_cursor(row=target, animate=False)


# -- activity and command line ----------------------------------------------------------


class ActivityLog(RichLog):
    STYLES: ClassVar[dict[str, str]] = {"info": "cyan", "error": "bold red", "done": "green", "out": "", "cmd": "bold"}

    def log_line(self, text: str, kind: str = "out") -> None:
        self.write(Text(text, style=self.STYLES.get(kind, "")))


class IndexSuggester(Suggester):
    """Inline ghost text: the first completion of what is typed (right arrow accepts)."""

    def __init__(self, index: Callable[[], CompletionIndex]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.index = index

    async def get_suggestion(self, value: str) -> str | None:
        found = complete(value, None, self.index())
        if not found:
            return None
        c = found[0]
        return value[: c.start] + c.text


@dataclass
class CommandSubmitted(Message):
    line: str


class CommandLine(Input):
    """`:` line: any command of the registry, with history and completion (tab)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete", "Complete", id="complete", tooltip="Complete the word under the cursor"),
        Binding("up", "history(-1)", "Previous", show=False),
        Binding("down", "history(1)", "Next", show=False),
        Binding("escape", "leave", "Leave", id="leave_command_line", tooltip="Back to the panes"),
    ]

    def __init__(self, index: Callable[[], CompletionIndex], history: list[str], **kw: Any) -> None:
        super().__init__(placeholder=":  type a command (tab completes, ↑ history, ? help)",
                         suggester=IndexSuggester(index), **kw)
        self.index = index
        self.history = history
        self._pos = len(history)
        self._draft = ""

    def action_complete(self) -> None:
        found = complete(self.value, self.cursor_position, self.index())
        if not found:
            self._hint("no completion")
            return
        head = self.value[: self.cursor_position]
        tail = self.value[self.cursor_position :]
        start = found[0].start
        texts = [c.text for c in found]
        common = texts[0]
        for t in texts[1:]:
            while not t.startswith(common):
                common = common[:-1]
        chosen = found[0].text if len(found) == 1 else common
        if len(chosen) <= len(head) - start and len(found) > 1:
            self._hint("  ".join(self._shown(found)))
            return
        new_head = head[:start] + chosen
        self.value = new_head + tail
        self.cursor_position = len(new_head)
        self._hint("  ".join(self._shown(found)) if len(found) > 1 else found[0].meta)

    @staticmethod
    def _shown(found: list[Completion]) -> list[str]:
        return [c.display or c.text for c in found[:12]] + (["…"] if len(found) > 12 else [])

    def _hint(self, text: str) -> None:
        self.post_message(HintChanged(text))

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        if self._pos == len(self.history):
            self._draft = self.value
        self._pos = max(0, min(len(self.history), self._pos + step))
        self.value = self.history[self._pos] if self._pos < len(self.history) else self._draft
        self.cursor_position = len(self.value)

    def action_leave(self) -> None:
        self.value = ""
        self.screen.set_focus(self.screen.query_one(InstancesTable))

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        self._hint(command_help(event.value) or "")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        line = event.value.strip().removeprefix(":").strip()
        self.value = ""
        if not line:
            return
        if not self.history or self.history[-1] != line:
            self.history.append(line)
        self._pos = len(self.history)
        self.post_message(CommandSubmitted(line))
        # Like vi's `:`: one command, then back to the panes.
        self.screen.set_focus(self.screen.query_one(InstancesTable))


@dataclass
class HintChanged(Message):
    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HintChanged)
