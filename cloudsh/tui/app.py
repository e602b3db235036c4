"""The full-screen app: panes for instances, prices and volumes, a command line over
the shared command registry, and single keys for what people do to a box.

Every cloud call runs in a worker; workers report back with messages, and a worker
that fails ends in one place (`on_worker_state_changed`). What the app knows and when
it acts on it lives in `tui/state.py`. The frame paints at once (from the cached last
listing, marked stale) and fills as data arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
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
from textual.worker import Worker, WorkerState

from cloudsh.commands.complete import REGIONS
from cloudsh.commands.registry import REGISTRY, Context
from cloudsh.config import Settings
from cloudsh.errors import CloudshError, Declined, UsageError
from cloudsh.tui import data, money
from cloudsh.tui.box import BoxScreen
from cloudsh.tui.handoff import Handoff, SuspendHandoff
from cloudsh.tui.hangup import leave_when_terminal_gone
from cloudsh.tui.help import help_sections
from cloudsh.tui.host import AppHost
from cloudsh.tui.instances import BoxWanted, InstanceActions, InstancesPane, InstancesTable
from cloudsh.tui.jobs import JobsPoller, JobsScreen
from cloudsh.tui.messages import (
    ActionFinished,
    ActivityLogged,
    BackendFailed,
    BackendReady,
    InstancesLoaded,
    JobsLoaded,
    JobsSynced,
    PricesLoaded,
    RefreshFailed,
    SpotHistoryLoaded,
    StorageLoaded,
    WorkerFailed,
)
from cloudsh.tui.output import PaneOutput
from cloudsh.tui.palette import ActionsProvider
from cloudsh.tui.runner import CommandRunner
from cloudsh.tui.screens import ConfirmScreen, HelpScreen, RegionScreen, TunnelsScreen
from cloudsh.tui.state import AppState
from cloudsh.tui.tunnels import TunnelManager
from cloudsh.tui.volumes import StorageActions, VolumesPane

if TYPE_CHECKING:
    # boto3 costs ~130 ms to import: the frame paints before any of it loads.
    from cloudsh.prefetch import Prefetch
    from cloudsh.services.backend import Backend

from cloudsh.tui.widgets import (
    ActivityLog,
    CommandLine,
    CommandSubmitted,
    HintChanged,
    PricesPane,
    StatusBar,
    TypeHighlighted,
)

BackendFactory = Callable[[], "Backend"]
W = TypeVar("W", bound=Widget)

#: Seconds the app waits for the prefetched first listing before connecting itself.
PREFETCH_WAIT_S = 5.0
#: Seconds after a listing arrives before the app tidies up (`_settle`).
SETTLE_S = 0.5
#: Worker group -> what a failure of it is reported as (`on_worker_state_changed`).
REFRESHES = {"refresh-instances": "instances", "refresh-prices": "prices", "refresh-storage": "volumes",
             "spot-history": "spot history"}


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


class CloudshApp(AppHost):
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
        self.state = AppState()
        self.history: list[str] = []
        self.tunnels = TunnelManager(self.run_worker, self.context, self.log_line, self.settings)
        self.jobs_poller: JobsPoller = JobsPoller(self)
        self.runner = CommandRunner(self)
        self._spot_cache: dict[str, list[float]] = {}
        self.set_keymap(dict(self.settings.keys))  # the user's keys, by binding id (see `?`)

    # -- layout ------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Vertical(id="panes"):
            yield InstancesPane(InstanceActions(self), id="instances")
            with Horizontal(id="lower"):
                yield PricesPane(id="prices")
                yield VolumesPane(StorageActions(self), id="volumes")
        yield ActivityLog(id="activity", max_lines=2000, wrap=True)
        yield CommandLine(lambda: self.state.index, self.history, id="command-line")
        yield Static("", id="hint")
        yield Footer(compact=True)  # every key and ^p palette fit in 120 columns

    def on_mount(self) -> None:
        if (theme := data.load_theme(self.settings.state_dir)) in self.available_themes:
            self.theme = theme  # as picked last time (the palette's theme chooser)
        self.main(InstancesPane).border_title = "Instances"
        self.main(PricesPane).border_title = "Prices"
        self.main(PricesPane).clock = self.clock
        self.main(VolumesPane).border_title = "Volumes"
        self.main(ActivityLog).border_title = "Activity"
        self.main(InstancesTable).focus()
        cached = data.load_listing(self.settings.cache_dir)
        if cached is not None and self.auto_connect:
            self.state.stale = True
            self.main(StatusBar).mode = cached.label
            self.post_message(InstancesLoaded(cached.records, stale=True, fetched_at=cached.saved_at))
        if self.auto_connect:
            self.state.connection.underway = True
            self.log_line("connecting to the cloud…", "info")
            if self.prefetch is not None:
                self._take_prefetch(self.prefetch)
            else:
                self._connect()
        leave_when_terminal_gone(self)
        if self.periodic_refresh:
            self.set_interval(0.5, self._tick)
            self.set_interval(1.0, self.jobs_poller.poll)  # lists jobs and pulls results when due

    # -- plumbing ------------------------------------------------------------------

    def context(self, out: Any) -> Context:
        return Context(
            out=out,
            backend_factory=self.require_backend,
            confirm=self._confirm,
            terminal=self._terminal,
            _backend=self.backend,
        )

    async def _confirm(self, question: str) -> bool:
        answer: bool = await self.push_screen_wait(ConfirmScreen(question))
        return answer

    async def _terminal(self, argv: Sequence[str]) -> int:
        return await self.handoff.run(argv)

    def _crash(self, exc: BaseException) -> str:
        from cloudsh.frontend import crash_log

        log = crash_log(exc, self.settings.state_dir)
        return f"unexpected error: {type(exc).__name__}: {exc} (this is a bug; details in {log})"

    # -- the one error route ---------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self._worker_failed(event.worker)

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self._worker_failed(message.worker)  # a widget's own worker (a table filling its rows)

    def _worker_failed(self, worker: Worker[Any]) -> None:
        """The one error route: every worker that raises ends here, a CloudshError as its
        one line, anything else as one line pointing at the crash log. Workers hold no
        try/except of their own, only `finally` for what must happen either way."""
        if worker.error is None:
            return
        exc = worker.error
        line = str(exc) if isinstance(exc, CloudshError) else self._crash(exc)
        group = worker.group
        if group in REFRESHES:
            if group == "refresh-instances":
                self.state.first_listing = False
            self.post_message(RefreshFailed(REFRESHES[group], line))
        elif group == "connect":
            self.post_message(BackendFailed(line))
        elif group == "commands":
            status = exc.exit_status if isinstance(exc, CloudshError) else 1
            self.post_message(ActionFinished(worker.name, status, 0.0, line, declined=isinstance(exc, Declined)))
        elif group == "jobs-poll":
            if not isinstance(exc, CloudshError) or self.state.jobs.failed(line):  # once, not every few seconds
                self.log_line(f"jobs: {line}", "error")
        else:  # IPython, the jobs view's log, a tunnel, saving the listing
            self.log_line(f"{worker.name or group}: {line}", "error")
            self.notify(line, title=worker.name or group, severity="error")

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
        except Exception:  # noqa: BLE001 - not an error: whatever went wrong, the app lists the normal way
            records = None
        finally:
            listing.cancel()  # if the app is leaving: the child is killed
        if records is not None and not self.state.fresh_seen:
            self.state.prefetched = self.backend is None
            self.post_message(InstancesLoaded(records, stale=False, fetched_at=self.clock()))
        if not connecting:
            self._connect()

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _connect(self) -> None:
        # connecting may start the sandbox (a few seconds): never on the event loop.
        backend = self.backend_factory()
        backend.tell = lambda line: self.log_line(line, "info")  # never stderr under the app
        self.state.connection.ready(backend)
        self.post_message(BackendReady(backend.label, backend.notice))

    @_while_up
    def on_backend_ready(self, message: BackendReady) -> None:
        state = self.state
        if state.stale and message.label != self.main(StatusBar).mode:
            # The cached listing was of another cloud (e.g. AWS, and now the sandbox).
            state.forget_listing()
            self.main(InstancesPane).show(())
        self.main(StatusBar).mode = message.label
        self._spot_cache.clear()  # prices differ per region
        if message.notice:
            self.log_line(message.notice, "info")
            self.notify(message.notice, title="sandbox", timeout=8)
        self.log_line(f"connected: {message.label}", "info")
        if state.prefetched:  # the listing on screen is fresh: the other panes' turn
            state.prefetched = False
            state.unsaved = (message.label, state.records)
            self.set_timer(SETTLE_S, self._settle)
            self.refresh_prices_and_storage()
            self._schedule_refresh()
            return
        # Instances first: the other panes wait for it so they do not compete with it for
        # the two or three seconds a cold start spends building boto3 clients.
        state.first_listing = True
        self.refresh_instances()

    @_while_up
    def on_backend_failed(self, message: BackendFailed) -> None:
        self.state.connection.failed(message.error)
        self.main(StatusBar).freshness = "offline"
        self.log_line(message.error, "error")
        self.notify(message.error, title="cannot reach the cloud", severity="error", timeout=15)

    def action_refresh(self) -> None:
        self.state.schedule.reset()
        self.refresh_all()

    def refresh_all(self) -> None:
        self.refresh_instances()
        self.refresh_prices_and_storage()

    def refresh_prices_and_storage(self) -> None:
        self._load_prices()
        self._load_storage()
        self.run_worker(money.load(self), group="money", exclusive=True, exit_on_error=False)

    @_while_up
    def refresh_instances(self) -> None:
        """Coalescing: a refresh asked for while one runs becomes one more run after it."""
        if self.backend is None or not self.state.schedule.start():
            return
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
                self.state.unsaved = (self.backend.label, records)
        finally:
            # Timers belong to the app's own task, not to this worker's.
            self.call_next(self._after_refresh)

    def _after_refresh(self) -> None:
        self.set_timer(SETTLE_S, self._settle)
        if self.state.schedule.finished():
            self.refresh_instances()
        else:
            self._schedule_refresh()

    def _settle(self) -> None:
        """A moment after a listing is drawn: collect what the refresh left behind (~10 ms
        for 1,000 boxes, in a loop turn of its own rather than on top of drawing the
        rows), and save the listing for the next start."""
        if self.state.schedule.running:
            return  # the refresh running now settles when it is done
        gc.collect(0)
        gc.enable()
        if self.state.unsaved is not None:
            self._save_listing()

    @work(thread=True, group="save-listing", exit_on_error=False)
    def _save_listing(self) -> None:
        # In a thread, after the rows are drawn: JSON-encoding 1,000 records holds the
        # GIL for ~5 ms, which would only slow the repaint down.
        unsaved, self.state.unsaved = self.state.unsaved, None
        if unsaved is not None:
            data.save_listing(self.settings.cache_dir, *unsaved)

    def _schedule_refresh(self) -> None:
        if self.periodic_refresh:
            self.state.schedule.plan(time.monotonic(), self.state.changing())

    def _tick(self) -> None:
        # One steady 0.5 s tick decides when to refresh, so the schedule can change
        # (an action starts, a box settles) without juggling timers.
        if self.state.schedule.tick(time.monotonic()):
            self.refresh_instances()

    @work(exclusive=True, group="refresh-prices", exit_on_error=False)
    async def _load_prices(self) -> None:
        rows, source, fetched_at, note = await data.fetch_prices(self.context(PaneOutput(self.log_line)))
        self.post_message(PricesLoaded(rows, source, fetched_at, note))

    @work(exclusive=True, group="refresh-storage", exit_on_error=False)
    async def _load_storage(self) -> None:
        vols, snaps, images, region = await data.fetch_storage(self.context(PaneOutput(self.log_line)))
        self.post_message(StorageLoaded(vols, snaps, images, region))

    @work(exclusive=True, group="spot-history", exit_on_error=False)
    async def _load_spot_history(self, instance_type: str) -> None:
        await asyncio.sleep(0.15)  # debounce: scrolling through the list fetches only where it stops
        points = await data.fetch_spot_history(self.context(PaneOutput(self.log_line)), instance_type)
        self.post_message(SpotHistoryLoaded(instance_type, points))

    # -- routing data to panes -------------------------------------------------------------

    @_while_up
    def on_instances_loaded(self, message: InstancesLoaded) -> None:
        state = self.state
        if not state.take_listing(message.records, stale=message.stale):
            return  # a fresh listing already arrived
        self.main(InstancesPane).show(state.rows)
        status = self.main(StatusBar)
        status.burn = state.burn
        when = message.fetched_at.astimezone().strftime("%H:%M:%S") if message.fetched_at else "?"
        status.freshness = f"stale: cached {when}" if message.stale else f"updated {when}"
        if state.first_listing and not message.stale:
            state.first_listing = False
            self.refresh_prices_and_storage()

    @_while_up
    def on_prices_loaded(self, message: PricesLoaded) -> None:
        self.state.take_prices(message.rows)
        pane = self.main(PricesPane)
        pane.show(message.rows, message.source, message.fetched_at, message.note)
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
        self.state.take_storage(message.volumes, message.snapshots, message.images)
        self.main(VolumesPane).show(
            message.volumes, message.snapshots, message.images, self.state.names(), region=message.region
        )

    @_while_up
    def on_refresh_failed(self, message: RefreshFailed) -> None:
        if message.what == "instances":
            self.main(StatusBar).freshness = "refresh failed"
        self.log_line(f"cannot refresh {message.what}: {message.error}", "error")
        self.notify(message.error, title=f"cannot refresh {message.what}", severity="error")

    # -- activity ------------------------------------------------------------------------

    @_while_up
    def on_activity_logged(self, message: ActivityLogged) -> None:
        self.main(ActivityLog).log_line(message.text, message.kind)

    @_while_up
    def on_action_finished(self, message: ActionFinished) -> None:
        if message.declined:
            self.log_line(f"– {message.label}: not done, nothing was changed", "info")
        elif message.error:
            self.log_line(f"✗ {message.label}: {message.error}", "error")
            self.notify(message.error, title=f"{message.label} failed", severity="error", timeout=10)
        else:
            took = f" in {message.elapsed_s:.1f}s" if message.elapsed_s >= 0.05 else ""
            self.log_line(f"✓ {message.label} done{took}", "done")
            if message.elapsed_s > 1.0:
                self.notify(f"{message.label} done{took}", title="done")
        self.state.schedule.reset()
        self.refresh_instances()
        self._load_storage()
        if self.periodic_refresh:
            self.jobs_poller.poll(now=True)  # a job started, stopped or resumed shows at once

    @_while_up
    def on_hint_changed(self, message: HintChanged) -> None:
        for main in self.screen_stack[:1]:  # none while the app takes its screens down
            main.query_one("#hint", Static).update(message.text)

    # -- jobs ------------------------------------------------------------------------------

    def action_jobs(self) -> None:
        if isinstance(self.screen, JobsScreen):
            self.screen.dismiss(None)
        else:
            self.push_screen(JobsScreen())

    def on_jobs_loaded(self, message: JobsLoaded) -> None:
        self.jobs_poller.loaded(message.jobs)

    def on_jobs_synced(self, message: JobsSynced) -> None:
        self.jobs_poller.synced(message.results)

    # -- commands ----------------------------------------------------------------------------

    @on(CommandSubmitted)
    def _command_submitted(self, message: CommandSubmitted) -> None:
        self.run_line(message.line)

    def run_line(self, line: str) -> None:
        """A typed line, prepared by the registry exactly as the REPL and the CLI do."""
        if line.strip() in ("quit", "exit"):
            self.exit(0)
        else:
            self.runner.line(line)

    def run_command(self, words: Sequence[str], label: str | None = None) -> None:
        """A command an action builds (the same registry, no typing)."""
        self.runner.command(words, label)

    # -- app-wide actions ---------------------------------------------------------------------

    def action_tunnels(self) -> None:
        row = self.main(InstancesPane).highlighted()
        self.push_screen(TunnelsScreen(self.tunnels, row.label if row else None))

    def watch_theme(self, theme: str) -> None:
        data.save_theme(self.settings.state_dir, theme)

    def on_box_wanted(self, message: BoxWanted) -> None:
        self.push_screen(BoxScreen(message.row))

    def action_command_line(self) -> None:
        self.main(CommandLine).focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_sections(self), REGISTRY.help_text()))

    def action_region(self) -> None:
        if self.backend is None:
            return
        current = self.backend.target.region
        choices: tuple[str, ...] = REGIONS
        if self.backend.sandbox:
            from cloudsh.root import sandbox_regions

            choices = tuple(r for r in REGIONS if r in sandbox_regions())

        def picked(region: str | None) -> None:
            if region and region != current:
                self._switch_region(region)

        self.push_screen(RegionScreen(choices, current), picked)

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def _switch_region(self, region: str) -> None:
        old = self.backend
        if old is None:
            return
        from cloudsh.root import connect

        try:
            backend = connect(old.settings, sandbox=old.sandbox, profile=old.target.profile, region=region)
        except CloudshError as exc:
            self.post_message(BackendFailed(str(exc)))
            return
        self.state.connection.ready(backend)
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
    app.run()
    money.say_leaving(app.state.records)
    return app.return_code or 0


__all__ = ["CloudshApp", "run_tui", "tune_gc"]
