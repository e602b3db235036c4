"""The panes. Attributes down, messages up: each widget has a `show(...)` that the app
calls with plain records, and posts messages when the user does something."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Span, Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.suggester import Suggester
from textual.widgets import DataTable, Input, RichLog, Sparkline, Static
from textual.worker import Worker, WorkerState

from cloudsh.commands.complete import Completion, CompletionIndex, command_help, complete
from cloudsh.commands.views import money
from cloudsh.models import InstanceType, Price
from cloudsh.tui.messages import WorkerFailed

#: Rows formatted, added or changed per event-loop turn in a LineTable.
SLICE = 100
SLICE_PAUSE_S = 0.01
#: A LineTable's one column.
LINE = "line"


# -- tables of one-line rows ----------------------------------------------------------

#: A row's column texts and styles.
Fields = tuple[tuple[str, str], ...]


def table_line(fields: Fields, widths: Sequence[int]) -> Text:
    """A whole row as one Text, columns padded to `widths` and two spaces apart."""
    parts: list[str] = []
    spans: list[Span] = []
    at = 0
    for (text, style), width in zip(fields, widths, strict=True):
        if style:
            spans.append(Span(at, at + len(text), style))
        cell = text + " " * (width - cell_len(text) + 2)  # padding, then the gap to the next
        parts.append(cell)
        at += len(cell)
    return Text("".join(parts)[:-2], spans=spans, no_wrap=True, end="")


class LineTable(DataTable[Any]):
    """A table that stays quick with 1,000 rows: each row is one `table_line` (a single
    DataTable column), and rows change in a worker, a slice per event-loop turn.

    With a cell per column, DataTable renders a Rich renderable per cell on every
    repaint, and a refresh changes every running box's uptime, so every repaint is a
    full one: 31 ms for 20 rows of ten columns, 84 ms for 60, the app's longest stall
    with 1,000 boxes. One Text per row takes a third of that. Rows are keyed; the cursor
    stays on its row's key, or where it was if that row is gone.
    """

    HEADER: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.keys: list[str] = []  # the rows shown, in order
        self.widths: tuple[int, ...] = ()
        self.filled = True  # the rows are what the last `show_rows` asked for
        self._drawn: dict[str, Fields] = {}
        self._formatted: dict[str, tuple[Any, Fields, tuple[int, ...]]] = {}

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self._set_widths(self._header_widths())

    def _header_widths(self) -> tuple[int, ...]:
        return tuple(cell_len(label) for label in self.HEADER)

    def _set_widths(self, widths: tuple[int, ...]) -> None:
        self.clear(columns=True)
        self.add_column(table_line(tuple((label, "") for label in self.HEADER), widths), key=LINE)
        self.widths = widths

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.post_message(WorkerFailed(event.worker))  # to the app's one error route

    def highlighted_key(self) -> str | None:
        return self.keys[self.cursor_row] if 0 <= self.cursor_row < len(self.keys) else None

    def show_rows(self, rows: list[tuple[str, Any]], fmt: Callable[[Any], Fields]) -> None:
        """Show these (key, source) rows in this order, each as `fmt(source)` says. Only
        sources that changed are formatted again, only rows that changed are redrawn."""
        self.filled = False
        # Exclusive: newer rows cancel a fill still under way. What is drawn stays
        # consistent (`keys` and `_drawn` change with each row), so the next fill carries
        # on from there. Given as a function: a fill cancelled before it began never makes
        # the coroutine it would have left unawaited.
        async def fill() -> None:
            await self._fill(rows, fmt)

        self.run_worker(fill, group="fill", exclusive=True, exit_on_error=False)  # type: ignore[arg-type]

    async def _fill(self, rows: list[tuple[str, Any]], fmt: Callable[[Any], Fields]) -> None:
        cache = self._formatted
        lines: list[tuple[str, Fields]] = []
        row_widths: list[tuple[int, ...]] = []
        for start in range(0, len(rows), SLICE):
            if start:
                await asyncio.sleep(0)
            for key, source in rows[start : start + SLICE]:
                hit = cache.get(key)
                if hit is None or hit[0] != source:
                    fields = fmt(source)
                    hit = cache[key] = (source, fields, tuple(cell_len(text) for text, _ in fields))
                lines.append((key, hit[1]))
                row_widths.append(hit[2])
        if len(cache) > 2 * len(rows) + 100:  # forget rows long gone
            self._formatted = {key: cache[key] for key, _ in rows}
        widths = tuple(map(max, zip(self._header_widths(), *row_widths, strict=True)))
        keys = [key for key, _ in lines]
        if keys == self.keys and widths == self.widths:
            # The same rows in the same order and widths: redraw what changed, in place
            # (no flicker; cursor and scroll untouched).
            changed = [(key, fields) for key, fields in lines if self._drawn.get(key) != fields]
            for start in range(0, len(changed), SLICE):
                if start:
                    await asyncio.sleep(SLICE_PAUSE_S)
                for key, fields in changed[start : start + SLICE]:
                    self.update_cell(key, LINE, table_line(fields, widths))
                    self._drawn[key] = fields
        else:
            was = self.highlighted_key()
            target = keys.index(was) if was in keys else min(self.cursor_row, len(keys) - 1)
            self._set_widths(widths)
            self.keys = []
            self._drawn = {}
            for start in range(0, len(lines), SLICE):
                if start:
                    await asyncio.sleep(SLICE_PAUSE_S)
                for key, fields in lines[start : start + SLICE]:
                    self.add_row(table_line(fields, widths), key=key)
                    self.keys.append(key)
                    self._drawn[key] = fields
                if 0 <= target < len(self.keys) and self.cursor_row != target:
                    self.move_cursor(row=target, animate=False)
        self.filled = True


# -- status bar -----------------------------------------------------------------


@dataclass
class MoneyLoaded(Message):
    """The month's projected cost, the budget, the budget threshold reached (0, 0.5, 0.8
    or 1.0) and the line to say once for a new crossing."""

    projection: float
    budget: float | None
    level: float
    warning: str | None
    ipv4_per_hour: float = 0.0


class StatusBar(Horizontal):
    """Mode (SANDBOX or profile/region), burn rate and the month's projection (coloured
    as it passes the budget's thresholds), and whether data is fresh."""

    mode: reactive[str] = reactive("connecting…")
    burn: reactive[float | None] = reactive(None)
    freshness: reactive[str] = reactive("")
    month: reactive[str] = reactive("")

    def on_money_loaded(self, message: MoneyLoaded) -> None:
        m = f" + {money(message.ipv4_per_hour)} IPv4" if message.ipv4_per_hour else ""
        m += f" · month ≈ ${message.projection:,.2f}"
        if message.budget:
            m += f" of ${message.budget:,.2f} budget"
        self.month = m + " (list prices)"
        for level in (0.5, 0.8, 1.0):
            self.set_class(message.level == level, f"budget-{int(level * 100)}")
        if message.warning:
            self.app.notify(message.warning, title="budget", severity="error" if message.level >= 1 else "warning",
                            timeout=15)

    def watch_month(self, month: str) -> None:
        self.watch_burn(self.burn)

    def compose(self) -> ComposeResult:
        yield Static(id="status-mode")
        yield Static(id="status-burn")
        yield Static(id="status-fresh")

    def watch_mode(self, mode: str) -> None:
        self.query_one("#status-mode", Static).update(Text(f" {mode} ", style="bold reverse"))

    def watch_burn(self, burn: float | None) -> None:
        text = ("burning -" if burn is None else f"burning {money(burn)}") + self.month
        self.query_one("#status-burn", Static).update(text)

    def watch_freshness(self, freshness: str) -> None:
        self.query_one("#status-fresh", Static).update(freshness)


# -- prices -------------------------------------------------------------------------


class PricesTable(LineTable):
    HEADER = ("Type", "vCPU", "Mem", "GPUs", "On-demand", "Spot", "Save")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "gpu_only", "GPU only", id="gpu_only", tooltip="Show only types with GPUs"),
        Binding("f", "family", "Family", id="family", tooltip="Show one family at a time"),
    ]

    def action_gpu_only(self) -> None:
        pane = self.query_ancestor(PricesPane)
        pane.gpu_only = not pane.gpu_only

    def action_family(self) -> None:
        self.query_ancestor(PricesPane).next_family()


def price_fields(row: tuple[InstanceType, Price | None]) -> Fields:
    it, p = row
    saving = p.spot_saving if p else None
    return (
        (it.name, ""), (str(it.vcpus), ""), (f"{it.memory_gib:g}G", ""), (it.gpus or "-", ""),
        (money(p.on_demand if p else None, ""), ""), (money(p.spot if p else None, ""), ""),
        (f"{saving:.0%}", "green") if saving is not None else ("-", ""),
    )


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
        self.note = ""  # why prices are missing
        self.loaded = False
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def compose(self) -> ComposeResult:
        yield PricesTable(id="prices-table")
        with Horizontal(id="spot-plot"):
            yield Static("", id="spot-label")
            yield Sparkline([], id="spot-sparkline", classes="hidden")
        yield Static("", id="prices-age")

    def show(
        self, rows: list[tuple[InstanceType, Price | None]], source: str, fetched_at: datetime | None, note: str = ""
    ) -> None:
        self.rows, self.source, self.fetched_at, self.note = rows, source, fetched_at, note
        self.loaded = True
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
        return self.query_one(PricesTable).highlighted_key()

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
        rows = [(it, p) for it, p in self.rows if (it.gpu_count or not self.gpu_only) and (not self.family or it.family == self.family)]
        self.query_one(PricesTable).show_rows([(it.name, (it, p)) for it, p in rows], price_fields)
        title = "Prices" + (" · GPU" if self.gpu_only else "") + (f" · {self.family}" if self.family else "")
        self.border_title = title
        self._render_age()

    def _render_age(self) -> None:
        from cloudsh.commands.views import age

        if not self.loaded:
            text = Text("loading prices…")
        elif self.fetched_at is None:
            text = Text("no prices")
        else:
            text = Text(f"prices {age(self.fetched_at, self.clock())}")
            if self.source:
                text.append(f" · {self.source}")
        if self.note:
            text.append(f" · missing: {self.note}", style="yellow")
        self.query_one("#prices-age", Static).update(text)

    @on(DataTable.RowHighlighted, "#prices-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = getattr(event.row_key, "value", None)  # None while the rows are being replaced
        if key:
            self.post_message(TypeHighlighted(str(key)))


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
        self.screen.set_focus(self.screen.query_one("#instances-table"))

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
        self.screen.set_focus(self.screen.query_one("#instances-table"))


@dataclass
class HintChanged(Message):
    text: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HintChanged)
