"""The full-screen app: panes for instances, prices and volumes, a command line over
the shared command registry, and single keys for what people do to a box.

Every cloud call runs in a worker; workers report back with messages. The frame
paints at once (from the cached last listing, marked stale) and fills as data arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Footer, Static

from cloudsh.commands.complete import REGIONS, CompletionIndex
from cloudsh.commands.registry import REGISTRY, Context, HelpRequested, dispatch
from cloudsh.commands.views import burn_rate
from cloudsh.config import Settings
from cloudsh.errors import CloudshError, UsageError
from cloudsh.models import InstanceType, Price
from cloudsh.tui import data
from cloudsh.tui.handoff import Handoff, SuspendHandoff
from cloudsh.tui.jobs import JobsActions
from cloudsh.tui.messages import (
    ActionFinished,
    ActivityLogged,
    BackendFailed,
    BackendReady,
    InstancesLoaded,
    PricesLoaded,
    RefreshFailed,
    SpotHistoryLoaded,
    StorageLoaded,
)
from cloudsh.tui.output import PaneOutput
from cloudsh.tui.palette import ActionsProvider
from cloudsh.tui.screens import ConfirmScreen, HelpScreen, RegionScreen, ResizeScreen, TunnelsScreen
from cloudsh.tui.tunnels import TunnelManager
from cloudsh.tui.volumes import STORAGE_ACTIONS, StorageActions

if TYPE_CHECKING:
    # boto3 costs ~130 ms to import: the frame paints before any of it loads.
    from cloudsh.prefetch import Prefetch
    from cloudsh.services.backend import Backend

from cloudsh.tui.widgets import (
    TRANSITIONAL,
    ActivityLog,
    CommandLine,
    CommandSubmitted,
    HintChanged,
    InstancesPane,
    InstancesTable,
    PricesPane,
    StatusBar,
    TypeHighlighted,
    VolumesPane,
)

BackendFactory = Callable[[], "Backend"]
W = TypeVar("W", bound=Widget)

#: Seconds between refreshes: fast while something changes state, backing off when idle.
FAST_REFRESH_S = 2.0
#: Seconds the app waits for the prefetched first listing before connecting itself.
PREFETCH_WAIT_S = 5.0
IDLE_REFRESH_S = (10.0, 20.0, 40.0, 60.0, 120.0)
#: Seconds after a listing arrives before the app tidies up (`_settle`).
SETTLE_S = 0.5


def _while_up(handler: Callable[..., None]) -> Callable[..., None]:
    """Messages still queued while the app shuts down find no panes: drop them then."""

    @functools.wraps(handler)
    def wrapper(self: CloudshApp, *args: Any) -> None:
        try:
            handler(self, *args)
        except NoMatches:
            if self.is_running and not self._exit:
                raise

    return wrapper


class CloudshApp(StorageActions, JobsActions, App[int]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "cloudsh"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("colon", "command_line", "Cmd", id="command_line", show=False, tooltip="Type any cloudsh command"),
        Binding("question_mark", "help", "Help", id="help", tooltip="Keys and commands"),
        Binding("T", "tunnels", "Tunnels", id="tunnels", tooltip="Open port forwards"),
        Binding("J", "jobs", "Jobs", id="jobs", tooltip="Scripts started with `script`: state, logs, results"),
        Binding("R", "region", "Region", id="region", show=False, tooltip="Switch the AWS region"),
        Binding("ctrl+r", "refresh", "Refresh", id="refresh", show=False, tooltip="Refresh everything now"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Leave cloudsh (boxes keep running)"),
    ]

    def __init__(
        self,
        backend_factory: BackendFactory,
        *,
        settings: Settings | None = None,
        handoff: Handoff | None = None,
        clock: Callable[[], datetime] | None = None,
        auto_connect: bool = True,
        periodic_refresh: bool = True,
        prefetch: Prefetch | None = None,
    ) -> None:
        super().__init__()
        self.backend_factory = backend_factory
        self.settings = settings or Settings.load()
        self.handoff: Handoff = handoff or SuspendHandoff(self)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.auto_connect = auto_connect
        self.periodic_refresh = periodic_refresh
        self.prefetch = prefetch
        self.backend: Backend | None = None
        self.records: list[dict[str, Any]] = []
        self.price_rows: list[tuple[InstanceType, Price | None]] = []
        self.index = CompletionIndex()
        self.history: list[str] = []
        self.tunnels = TunnelManager(self.run_worker, self.context, self.log_line)
        self._busy = 0
        self._idle_step = 0
        self._refreshing = False
        self._refresh_again = False
        self._next_refresh_at: float | None = None
        self._spot_cache: dict[str, list[float]] = {}
        self._names: dict[str, str] = {}
        self.stale = False
        self._first_listing = False
        self._prefetched = False  # a listing from the prefetch is on screen, none of our own yet
        self._fresh_seen = False
        self._unsaved: tuple[str, list[dict[str, Any]]] | None = None
        self.init_jobs()

    # -- layout ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Vertical(id="panes"):
            yield InstancesPane(id="instances")
            with Horizontal(id="lower"):
                yield PricesPane(id="prices")
                yield VolumesPane(id="volumes")
        yield ActivityLog(id="activity", max_lines=2000, wrap=True)
        yield CommandLine(lambda: self.index, self.history, id="command-line")
        yield Static("", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.main(InstancesPane).border_title = "Instances"
        self.main(PricesPane).border_title = "Prices"
        self.main(PricesPane).clock = self.clock
        self.main(VolumesPane).border_title = "Volumes"
        self.main(ActivityLog).border_title = "Activity"
        self.main(InstancesTable).focus()
        cached = data.load_listing(self.settings.cache_dir)
        if cached is not None and self.auto_connect:
            self.stale = True
            self.main(StatusBar).mode = cached.label
            self.post_message(InstancesLoaded(cached.records, stale=True, fetched_at=cached.saved_at))
        if self.auto_connect:
            self.log_line("connecting to the cloud…", "info")
            if self.prefetch is not None:
                self._take_prefetch(self.prefetch)
            else:
                self._connect()
        if self.periodic_refresh:
            self.set_interval(0.5, self._tick)
            self.set_interval(1.0, self.poll_jobs)  # lists jobs and pulls results when due

    # -- plumbing ------------------------------------------------------------------

    def main(self, selector: type[W]) -> W:
        """A widget of the main screen, whichever screen (dialog) is on top."""
        if not self.screen_stack:  # shutting down: the screens are gone
            raise NoMatches(f"no main screen for {selector.__name__}")
        return self.screen_stack[0].query_one(selector)

    def log_line(self, text: str, kind: str = "out") -> None:
        self.post_message(ActivityLogged(text, kind))

    def context(self, out: Any) -> Context:
        return Context(
            out=out,
            backend_factory=self._require_backend,
            confirm=self._confirm,
            terminal=self._terminal,
            _backend=self.backend,
        )

    def _require_backend(self) -> Backend:
        if self.backend is None:
            raise CloudshError("not connected to the cloud yet", "wait a moment and try again")
        return self.backend

    async def _confirm(self, question: str) -> bool:
        answer: bool = await self.push_screen_wait(ConfirmScreen(question))
        return answer

    async def _terminal(self, argv: Sequence[str]) -> int:
        return await self.handoff.run(argv)

    def _crash(self, exc: BaseException) -> str:
        path = self.settings.state_dir / "crash.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(f"--- {datetime.now(UTC).isoformat()} cloudsh TUI\n{''.join(traceback.format_exception(exc))}")
        except OSError:
            return f"unexpected error: {type(exc).__name__}: {exc} (this is a bug)"
        return f"unexpected error: {type(exc).__name__}: {exc} (this is a bug; details in {path})"

    # -- connecting and refreshing ------------------------------------------------------

    @work(group="prefetch", exit_on_error=False)
    async def _take_prefetch(self, prefetch: Prefetch) -> None:
        # The first listing comes from a child forked before Textual was imported. The
        # backend is built once it is in (both at once would only compete for the GIL),
        # or once the child has taken PREFETCH_WAIT_S: a slow cloud must not also hold
        # up the app's own connection.
        listing = asyncio.ensure_future(prefetch.records())
        connecting = False
        try:
            done, _ = await asyncio.wait({listing}, timeout=PREFETCH_WAIT_S)
            if not done:
                connecting = True
                self._connect()
            records = await listing
        except Exception:  # noqa: BLE001 - whatever went wrong, the app lists the normal way
            records = None
        finally:
            listing.cancel()  # if the app is leaving: the child is killed
        if records is not None and not self._fresh_seen:
            self._prefetched = self.backend is None
            self.post_message(InstancesLoaded(records, stale=False, fetched_at=self.clock()))
        if not connecting:
            self._connect()

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _connect(self) -> None:
        # Backend.create may start the sandbox (a few seconds): never on the event loop.
        try:
            backend = self.backend_factory()
        except CloudshError as exc:
            self.post_message(BackendFailed(str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - reported as one line, logged in full
            self.post_message(BackendFailed(self._crash(exc)))
            return
        self.backend = backend
        self.post_message(BackendReady(backend.label, backend.notice))

    @_while_up
    def on_backend_ready(self, message: BackendReady) -> None:
        if self.stale and message.label != self.main(StatusBar).mode:
            # The cached listing was of another cloud (e.g. AWS, and now the sandbox).
            self.stale = False
            self.records = []
            self.main(InstancesPane).show([])
        self.main(StatusBar).mode = message.label
        self._spot_cache.clear()  # prices differ per region
        if message.notice:
            self.log_line(message.notice, "info")
            self.notify(message.notice, title="sandbox", timeout=8)
        self.log_line(f"connected: {message.label}", "info")
        if self._prefetched:  # the listing on screen is fresh: the other panes' turn
            self._prefetched = False
            self._unsaved = (message.label, self.records)
            self.set_timer(SETTLE_S, self._settle)
            self.refresh_prices_and_storage()
            self._schedule_refresh()
            return
        # Instances first: the other panes wait for it so they do not compete with it for
        # the two or three seconds a cold start spends building boto3 clients.
        self._first_listing = True
        self.refresh_instances()

    @_while_up
    def on_backend_failed(self, message: BackendFailed) -> None:
        self.main(StatusBar).freshness = "offline"
        self.log_line(message.error, "error")
        self.notify(message.error, title="cannot reach the cloud", severity="error", timeout=15)

    def action_refresh(self) -> None:
        self._idle_step = 0
        self.refresh_all()

    def refresh_all(self) -> None:
        self.refresh_instances()
        self.refresh_prices_and_storage()

    def refresh_prices_and_storage(self) -> None:
        self._load_prices()
        self._load_storage()

    @_while_up
    def refresh_instances(self) -> None:
        """Coalescing: a refresh asked for while one runs becomes one more run after it."""
        if self.backend is None:
            return
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        self.main(StatusBar).freshness = "⟳ refreshing"
        # A refresh allocates ~100k objects (1,000 instances parsed and turned into rows);
        # the cyclic collector walking them mid-refresh stalled the loop for 80+ ms. So
        # the collector sits the refresh out, and `_settle` runs it once the rows are shown.
        gc.disable()
        self.run_worker(self._load_instances(), group="refresh-instances", exit_on_error=False)

    async def _load_instances(self) -> None:
        try:
            records = await data.fetch_instances(self.context(PaneOutput(self.log_line)))
            self.post_message(InstancesLoaded(records, stale=False, fetched_at=self.clock()))
            if self.backend is not None:
                self._unsaved = (self.backend.label, records)
        except CloudshError as exc:
            self._first_listing = False
            self.post_message(RefreshFailed("instances", str(exc)))
        except Exception as exc:  # noqa: BLE001 - the app stays up; the details go to a log
            self.post_message(RefreshFailed("instances", self._crash(exc)))
        finally:
            self._refreshing = False
            # Timers belong to the app's own task, not to this worker's.
            self.call_next(self._after_refresh)

    def _after_refresh(self) -> None:
        self.set_timer(SETTLE_S, self._settle)
        if self._refresh_again:
            self._refresh_again = False
            self.refresh_instances()
        else:
            self._schedule_refresh()

    def _settle(self) -> None:
        """A moment after a listing is drawn: collect what the refresh left behind (~10 ms
        for 1,000 boxes, in a loop turn of its own rather than on top of drawing the
        rows), and save the listing for the next start."""
        if self._refreshing:
            return  # the refresh running now settles when it is done
        gc.collect(0)
        gc.enable()
        if self._unsaved is not None:
            self._save_listing()

    @work(thread=True, group="save-listing", exit_on_error=False)
    def _save_listing(self) -> None:
        # In a thread, after the rows are drawn: JSON-encoding 1,000 records holds the
        # GIL for ~5 ms, which would only slow the repaint down.
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is not None:
            data.save_listing(self.settings.cache_dir, *unsaved)

    def _schedule_refresh(self) -> None:
        if not self.periodic_refresh:
            return
        changing = self._busy or any(r["state"] in TRANSITIONAL for r in self.records)
        if changing:
            self._idle_step = 0
            delay = FAST_REFRESH_S
        else:
            delay = IDLE_REFRESH_S[min(self._idle_step, len(IDLE_REFRESH_S) - 1)]
            self._idle_step += 1
        self._next_refresh_at = time.monotonic() + delay

    def _tick(self) -> None:
        # One steady 0.5 s tick decides when to refresh, so the schedule can change
        # (an action starts, a box settles) without juggling timers.
        due = self._next_refresh_at
        if due is not None and time.monotonic() >= due and not self._refreshing:
            self._next_refresh_at = None
            self.refresh_instances()
        elif self._busy and due is not None and due - time.monotonic() > FAST_REFRESH_S:
            self._next_refresh_at = time.monotonic() + FAST_REFRESH_S

    @work(exclusive=True, group="refresh-prices", exit_on_error=False)
    async def _load_prices(self) -> None:
        try:
            rows, source, fetched_at = await data.fetch_prices(self.context(PaneOutput(self.log_line)))
            self.post_message(PricesLoaded(rows, source, fetched_at))
        except CloudshError as exc:
            self.post_message(RefreshFailed("prices", str(exc)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(RefreshFailed("prices", self._crash(exc)))

    @work(exclusive=True, group="refresh-storage", exit_on_error=False)
    async def _load_storage(self) -> None:
        try:
            vols, snaps, images = await data.fetch_storage(self.context(PaneOutput(self.log_line)))
            self.post_message(StorageLoaded(vols, snaps, images))
        except CloudshError as exc:
            self.post_message(RefreshFailed("volumes", str(exc)))
        except Exception as exc:  # noqa: BLE001
            self.post_message(RefreshFailed("volumes", self._crash(exc)))

    @work(exclusive=True, group="spot-history", exit_on_error=False)
    async def _load_spot_history(self, instance_type: str) -> None:
        await asyncio.sleep(0.15)  # debounce: scrolling through the list fetches only where it stops
        try:
            points = await data.fetch_spot_history(self.context(PaneOutput(self.log_line)), instance_type)
        except CloudshError as exc:
            self.post_message(RefreshFailed("spot history", str(exc)))
            return
        self.post_message(SpotHistoryLoaded(instance_type, points))

    # -- routing data to panes -------------------------------------------------------------

    @_while_up
    def on_instances_loaded(self, message: InstancesLoaded) -> None:
        if not message.stale:
            self.stale = False
            self._fresh_seen = True
        elif not self.stale:
            return  # a fresh listing already arrived
        self.records = message.records
        self._names = {r["id"]: r["name"] or r["id"] for r in self.records}
        self.main(InstancesPane).show(self.records)
        status = self.main(StatusBar)
        status.burn = burn_rate(self.records)
        when = message.fetched_at.astimezone().strftime("%H:%M:%S") if message.fetched_at else "?"
        status.freshness = f"stale: cached {when}" if message.stale else f"updated {when}"
        self._rebuild_index()
        if self._first_listing and not message.stale:
            self._first_listing = False
            self.refresh_prices_and_storage()

    @_while_up
    def on_prices_loaded(self, message: PricesLoaded) -> None:
        self.price_rows = message.rows
        pane = self.main(PricesPane)
        pane.show(message.rows, message.source, message.fetched_at)
        self._rebuild_index()
        current = pane.highlighted()
        if current:
            self.on_type_highlighted(TypeHighlighted(current))

    @_while_up
    def on_type_highlighted(self, message: TypeHighlighted) -> None:
        cached = self._spot_cache.get(message.instance_type)
        if cached is not None:
            self.main(PricesPane).show_history(message.instance_type, cached)
        elif self.backend is not None:
            self._load_spot_history(message.instance_type)

    @_while_up
    def on_spot_history_loaded(self, message: SpotHistoryLoaded) -> None:
        series = data.hourly(message.points)
        self._spot_cache[message.instance_type] = series
        self.main(PricesPane).show_history(message.instance_type, series)

    @_while_up
    def on_storage_loaded(self, message: StorageLoaded) -> None:
        self.main(VolumesPane).show(message.volumes, message.snapshots, message.images, self._names)
        self.index = CompletionIndex(
            **{**self._index_fields(),
               "volumes": tuple(v.id for v in message.volumes) + tuple(v.name for v in message.volumes if v.name),
               "snapshots": tuple(s.id for s in message.snapshots),
               "images": tuple(i.name or i.id for i in message.images)}
        )

    @_while_up
    def on_refresh_failed(self, message: RefreshFailed) -> None:
        if message.what == "instances":
            self.main(StatusBar).freshness = "refresh failed"
        self.log_line(f"cannot refresh {message.what}: {message.error}", "error")
        self.notify(message.error, title=f"cannot refresh {message.what}", severity="error")

    def _index_fields(self) -> dict[str, Any]:
        return {
            "instances": tuple(r["name"] for r in self.records if r["name"]) + tuple(r["id"] for r in self.records),
            "types": tuple(t.name for t, _ in self.price_rows),
            "families": tuple(sorted({t.family for t, _ in self.price_rows})),
            "volumes": self.index.volumes,
            "snapshots": self.index.snapshots,
            "images": self.index.images,
            "regions": REGIONS,
        }

    def _rebuild_index(self) -> None:
        self.index = CompletionIndex(**self._index_fields())

    # -- activity ------------------------------------------------------------------------

    @_while_up
    def on_activity_logged(self, message: ActivityLogged) -> None:
        self.main(ActivityLog).log_line(message.text, message.kind)

    @_while_up
    def on_action_finished(self, message: ActionFinished) -> None:
        if message.error:
            self.log_line(f"✗ {message.label}: {message.error}", "error")
            self.notify(message.error, title=f"{message.label} failed", severity="error", timeout=10)
        else:
            took = f" in {message.elapsed_s:.1f}s" if message.elapsed_s >= 0.05 else ""
            self.log_line(f"✓ {message.label} done{took}", "done")
            if message.elapsed_s > 1.0:
                self.notify(f"{message.label} done{took}", title="done")
        self._idle_step = 0
        self.refresh_instances()
        self._load_storage()
        if self.periodic_refresh:
            self.poll_jobs(now=True)  # a job started, stopped or resumed shows at once

    @_while_up
    def on_hint_changed(self, message: HintChanged) -> None:
        self.screen_stack[0].query_one("#hint", Static).update(message.text)

    # -- commands ----------------------------------------------------------------------------

    @on(CommandSubmitted)
    def _command_submitted(self, message: CommandSubmitted) -> None:
        self.run_line(message.line)

    def run_line(self, line: str) -> None:
        import shlex

        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.log_line(f"cannot parse the line: {exc}. check the quotes", "error")
            return
        if not words:
            return
        if words[0] in ("quit", "exit"):
            self.exit(0)
            return
        if words[0] == "help" and len(words) == 1:
            self.log_line(REGISTRY.help_text(), "out")
            return
        if words[0] == "help":
            words = words[1:] + ["--help"]
        if words[0] == "tunnel" and len(words) >= 3 and not any(w.startswith("-") for w in words[1:]):
            # The app keeps tunnels open in the background (see the tunnels view).
            for spec in words[2:]:
                self.tunnels.open_spec(words[1], spec)
            return
        self.run_command(words)

    def run_command(self, words: Sequence[str], label: str | None = None) -> None:
        self.run_worker(self._run_command(list(words), label or " ".join(words)), group="commands", exit_on_error=False)

    async def _run_command(self, words: list[str], label: str) -> None:
        started = time.monotonic()
        out = PaneOutput(self.log_line, started=started)
        self.log_line(f"> {' '.join(words)}", "cmd")
        self._busy += 1
        status, error = 0, None
        try:
            if self.backend is None and words[:1] != ["sandbox"]:
                raise CloudshError("not connected to the cloud yet", "wait a moment and try again")
            status = await dispatch(self.context(out), words)
        except HelpRequested as h:
            out.print(h.text.rstrip())
        except CloudshError as exc:
            status, error = exc.exit_status, str(exc)
        except Exception as exc:  # noqa: BLE001 - the app stays up
            status, error = 1, self._crash(exc)
        finally:
            out.flush()
            self._busy -= 1
        if status and error is None:
            error = f"exit status {status}"
        self.post_message(ActionFinished(label, status, time.monotonic() - started, error))

    # -- actions on the highlighted instance ------------------------------------------------

    def highlighted(self) -> dict[str, Any] | None:
        return self.main(InstancesPane).highlighted()

    def _box(self) -> str | None:
        rec = self.highlighted()
        if rec is None:
            self.notify("no instance highlighted; launch one with  :launch NAME", severity="warning")
            return None
        return str(rec["name"] or rec["id"])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "freeze":
            return "freeze" in REGISTRY.commands
        if action in STORAGE_ACTIONS:
            return self.storage_action_applies(action)
        return True

    def action_connect(self) -> None:
        box = self._box()
        if box:
            self.run_command(["connect", box], f"connect {box}")

    def action_tunnel(self, port: int = 8888) -> None:
        box = self._box()
        if box:
            tun = self.tunnels.open(box, port, port)
            self.notify(f"{tun.url} -> {box}:{port}  (T lists tunnels)", title="tunnel")

    def action_tunnels(self) -> None:
        rec = self.highlighted()
        self.push_screen(TunnelsScreen(self.tunnels, (rec["name"] or rec["id"]) if rec else None))

    def action_resize(self) -> None:
        rec = self.highlighted()
        if rec is None:
            self._box()
            return
        if not self.price_rows:
            self.notify("prices are still loading; try again in a moment", severity="warning")
            return
        box = str(rec["name"] or rec["id"])

        def chosen(new_type: str | None) -> None:
            if new_type:
                self.run_command(["resize", box, new_type, "--yes"], f"resize {box} to {new_type}")

        self.push_screen(ResizeScreen(rec, self.price_rows), chosen)

    def action_freeze(self) -> None:
        box = self._box()
        if box and "freeze" in REGISTRY.commands:
            self.run_command(["freeze", box], f"freeze {box}")

    def action_start_stop(self) -> None:
        rec = self.highlighted()
        if rec is None:
            self._box()
            return
        box = str(rec["name"] or rec["id"])
        if rec["state"] in ("running", "pending"):
            self.run_command(["stop", box], f"stop {box}")
        elif rec["state"] == "stopped":
            self.run_command(["start", box], f"start {box}")
        else:
            self.notify(f"{box} is {rec['state']}; wait until it settles", severity="warning")

    def action_terminate(self) -> None:
        box = self._box()
        if box:
            # The command itself asks, through `_confirm`, listing what will be lost.
            self.run_command(["terminate", box], f"terminate {box}")

    def action_ipython(self) -> None:
        rec = self.highlighted()
        self._ipython(str(rec["name"] or rec["id"]) if rec else None)

    @work(group="ipython", exclusive=True, exit_on_error=False)
    async def _ipython(self, box: str | None) -> None:
        try:
            namespace = await asyncio.to_thread(self._ipython_namespace, box)
            await self.handoff.ipython(namespace)
        except CloudshError as exc:
            self.log_line(f"IPython: {exc}", "error")
            self.notify(str(exc), title="IPython", severity="error")
        except Exception as exc:  # noqa: BLE001
            self.log_line(self._crash(exc), "error")
        self.refresh_instances()

    def _ipython_namespace(self, box: str | None) -> dict[str, Any]:
        # A Backend of its own: the API runs its own event loop, and SSH connections
        # belong to the loop that opened them.
        from cloudsh.api import Cloud
        from cloudsh.ipython import build_namespace

        cloud = Cloud(backend=self.backend_factory())
        namespace = build_namespace(cloud)
        if box:
            # If the box went away meanwhile, `cloud` is still there.
            with contextlib.suppress(CloudshError):
                namespace["box"] = cloud.instance(box)
        return namespace

    # -- app-wide actions ---------------------------------------------------------------------

    def action_command_line(self) -> None:
        self.main(CommandLine).focus()

    def action_help(self) -> None:
        keys = [(b.key_display or b.key, b.description) for b in self._all_bindings() if b.description]
        self.push_screen(HelpScreen(keys, REGISTRY.help_text()))

    def _all_bindings(self) -> list[Binding]:
        from cloudsh.tui.widgets import PricesTable, StorageTable

        out: list[Binding] = []
        for cls in (CloudshApp, InstancesTable, PricesTable, StorageTable, CommandLine):
            for b in Binding.make_bindings(cls.BINDINGS):
                if b.id != "freeze" or "freeze" in REGISTRY.commands:
                    out.append(b)
        extra = [("tab", "Next pane"), ("shift+tab", "Previous pane"), ("ctrl+p", "Command palette"), ("j/k ↑/↓", "Move")]
        return out + [Binding(k, "", d) for k, d in extra]

    def action_region(self) -> None:
        if self.backend is None:
            return
        if self.backend.sandbox:
            self.notify("the sandbox cloud has one region (us-east-1)", title="region")
            return
        current = self.backend.target.region

        def picked(region: str | None) -> None:
            if region and region != current:
                self._switch_region(region)

        self.push_screen(RegionScreen(REGIONS, current), picked)

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _switch_region(self, region: str) -> None:
        old = self.backend
        if old is None:
            return
        from cloudsh.root import connect

        try:
            backend = connect(old.settings, sandbox=False, profile=old.target.profile, region=region)
        except CloudshError as exc:
            self.post_message(BackendFailed(str(exc)))
            return
        self.backend = backend
        self.post_message(BackendReady(backend.label))

    async def action_quit(self) -> None:
        self.tunnels.close_all()
        if self.backend is not None:
            with contextlib.suppress(CloudshError):  # leaving anyway
                await self.backend.close()
        self.exit(0)


def tune_gc() -> None:
    """Keep garbage collection out of the way of the event loop.

    With 1,000 instances listed, a full collection walks every record and widget and
    stalled the app for ~50 ms at a time (measured in bench/tui_startup.py). Objects
    alive after start-up are frozen out of collections; young ones are collected less
    often, each pass still short.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def run_tui(backend_factory: BackendFactory, prefetch: Prefetch | None = None) -> int:
    """`cloudsh` with no arguments: run the app until the user quits; the exit status."""
    tune_gc()
    try:
        app = CloudshApp(backend_factory, prefetch=prefetch)
    except UsageError as exc:  # a broken config file
        import sys

        sys.stderr.write(f"cloudsh: {exc}\n")
        return exc.exit_status
    return app.run() or 0


__all__ = ["CloudshApp", "run_tui", "tune_gc"]
