"""The jobs view (`J`): scripts started with `script`, their state, runtime, cost so far,
where results go and how many are home, and the highlighted job's last log lines.

While the app runs, jobs are listed every few seconds when one runs (every 30 s
otherwise) and the results of running jobs are pulled home (`ops.jobs.sync_all`), so
results arrive as they are written, without `cloudsh sync`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static

from cloudsh.commands.views import duration, money
from cloudsh.errors import CloudshError
from cloudsh.models import Job
from cloudsh.tui.messages import JobLogLoaded, JobsLoaded, JobsSynced
from cloudsh.tui.state import JOB_ACTIVE

if TYPE_CHECKING:
    from cloudsh.tui.host import AppHost

LOG_LINES = 200
ACTIVE = JOB_ACTIVE
JOB_STATE_STYLES = {"running": "bold green", "starting": "bold yellow", "finished": "", "interrupted": "bold magenta",
                    "stopped": "dim", "lost": "bold red"}
JOB_COLUMNS = (("id", "Job"), ("box", "Box"), ("script", "Script"), ("state", "State"), ("runtime", "Runtime"),
               ("cost", "Cost"), ("results", "Results"))


def state_text(job: Job) -> Text:
    label = job.state
    if job.state == "finished" and job.exit_status:
        label = f"finished ({job.exit_status})"
    elif job.state == "running" and job.runs > 1:
        label = f"running (run {job.runs})"
    style = JOB_STATE_STYLES.get(job.state, "")
    if job.state == "finished" and job.exit_status:
        style = "bold red"
    return Text(label, style=style, no_wrap=True, end="")


def results_text(job: Job, synced: dict[str, tuple[int, int, str]]) -> str:
    if not job.remote_dir:
        return "-"
    home, pending, when = synced.get(job.id, (0, -1, ""))
    where = job.local_dir or job.remote_dir
    if pending < 0:
        return where
    note = f"{home} copied" + (f", {pending} pending" if pending else "") + (f" · {when}" if when else "")
    return f"{where} ({note})"


class JobsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,J", "close", "Back", id="jobs_close"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("y", "sync", "Sync now", id="jobs_sync", tooltip="Copy the job's results home now"),
        Binding("s", "stop", "Stop", id="jobs_stop", tooltip="Stop the job (asks first)"),
        Binding("u", "resume", "Resume", id="jobs_resume", tooltip="Run an interrupted job again (CLOUDSH_RESUME=1)"),
        Binding("L", "logs", "Logs", id="jobs_logs", tooltip="Reload the job's log"),
        Binding("ctrl+r", "refresh", "Refresh", id="jobs_refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Job] = []
        self._shown: list[str] = []
        self._log_for: str | None = None

    @property
    def cloud_app(self) -> AppHost:
        return cast("AppHost", self.app)

    def compose(self) -> ComposeResult:
        with Vertical(id="jobs-pane"):
            yield DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="jobs-empty")
        yield RichLog(id="job-log", max_lines=LOG_LINES, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#jobs-pane").border_title = "Jobs"
        self.query_one("#job-log").border_title = "Log"
        t = self.query_one(DataTable)
        for key, label in JOB_COLUMNS:
            t.add_column(label, key=key)
        self.show(self.cloud_app.state.jobs.jobs)
        t.focus()
        self.cloud_app.jobs_poller.poll(now=True)

    def show(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        t = self.query_one(DataTable)
        current = self.highlighted()
        synced = self.cloud_app.state.jobs.results
        t.clear()
        self._shown = []
        for job in jobs:
            t.add_row(
                job.id, job.instance_name, job.script, state_text(job),
                (f"{int(job.runtime_s)}s" if job.runtime_s < 60 else duration(job.runtime_s)) if job.started else "-",
                money(job.cost, ""), results_text(job, synced), key=job.id,
            )
            self._shown.append(job.id)
        if current is not None and current.id in self._shown:
            t.move_cursor(row=self._shown.index(current.id), animate=False)
        empty = self.query_one("#jobs-empty", Static)
        empty.update("" if jobs else "No jobs. Start one with  :script BOX FILE --sync out:./results")
        empty.display = not jobs
        running = sum(j.state in ACTIVE for j in jobs)
        self.query_one("#jobs-pane").border_title = f"Jobs · {running} running" if running else "Jobs"
        shown = self.highlighted()
        if shown is not None and shown.id != self._log_for:
            self._show_tail(shown)
        self.refresh_bindings()

    def highlighted(self) -> Job | None:
        t = self.query_one(DataTable)
        if not self._shown or not 0 <= t.cursor_row < len(self._shown):
            return None
        jid = self._shown[t.cursor_row]
        return next((j for j in self.jobs if j.id == jid), None)

    def _show_tail(self, job: Job) -> None:
        """The last lines the listing brought at once; the full tail from the box after."""
        self._log_for = job.id
        log = self.query_one(RichLog)
        log.clear()
        log.border_title = f"Log · {job.id}"
        for line in job.last_lines:
            log.write(Text(line))
        if self.cloud_app.backend is not None:
            # On the app, so an unexpected failure takes the app's one error route.
            self.app.run_worker(self._fetch_log(job.id), name="job log", group="job-log", exclusive=True,
                                exit_on_error=False)

    async def _fetch_log(self, job_id: str) -> None:
        from cloudsh.ops import jobs as ops

        chunks: list[str] = []
        try:
            await ops.logs(self.cloud_app.require_backend(), job_id, follow=False, on_output=chunks.append)
        except CloudshError as exc:  # what the log pane shows instead: not an error of the app
            self.post_message(JobLogLoaded(job_id, [f"(log not available: {exc})"]))
            return
        lines = "".join(chunks).splitlines()[-LOG_LINES:]
        self.post_message(JobLogLoaded(job_id, lines))

    def on_job_log_loaded(self, message: JobLogLoaded) -> None:
        if message.job_id != self._log_for:
            return
        log = self.query_one(RichLog)
        log.clear()
        for line in message.lines:
            log.write(Text(line))

    @on(DataTable.RowHighlighted, "#jobs-table")
    def _row_changed(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        job = self.highlighted()
        if job is not None and job.id != self._log_for:
            self._show_tail(job)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        job = self.highlighted() if self.is_mounted else None
        if action == "sync":
            return job is not None and bool(job.remote_dir)
        if action == "stop":
            return job is not None and job.state in ACTIVE
        if action == "resume":
            return job is not None and job.state in ("interrupted", "lost", "stopped")
        if action == "logs":
            return job is not None
        return True

    def _job(self) -> Job | None:
        job = self.highlighted()
        if job is None:
            self.notify("no job highlighted", severity="warning")
        return job

    def action_close(self) -> None:
        if self.app.screen is self:  # a second escape in one burst must not pop the app's screen
            self.dismiss(None)

    def action_cursor_down(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(DataTable).action_cursor_up()

    def action_sync(self) -> None:
        job = self._job()
        if job:
            self.cloud_app.run_command(["sync", job.id], f"sync {job.id}")

    def action_stop(self) -> None:
        job = self._job()
        if job:
            # `job stop` asks, through the app's confirmation dialog.
            self.cloud_app.run_command(["job", "stop", job.id], f"stop job {job.id}")

    def action_resume(self) -> None:
        job = self._job()
        if job:
            self.cloud_app.run_command(["job", "resume", job.id], f"resume job {job.id}")

    def action_logs(self) -> None:
        job = self._job()
        if job:
            self._show_tail(job)

    def action_refresh(self) -> None:
        self.cloud_app.jobs_poller.poll(now=True)


class JobsPoller:
    """Lists jobs and pulls the results of running ones home, on the app's timer; when
    is decided by `state.JobsPoll`. Failures take the app's error route ("jobs-poll")."""

    def __init__(self, app: AppHost) -> None:
        self.app = app
        self.state = app.state.jobs

    def poll(self, *, now: bool = False) -> None:
        """Called by the app's timer (and `now=True` after an action): lists jobs when due."""
        app = self.app
        ready = app.backend is not None and not app.state.first_listing
        if self.state.start(time.monotonic(), ready=ready, force=now):
            app.run_worker(self._poll(), group="jobs-poll", exit_on_error=False)

    async def _poll(self) -> None:
        from cloudsh.ops import jobs as ops

        app = self.app
        active = False
        try:
            backend = app.require_backend()
            jobs = await ops.list_jobs(backend)
            app.post_message(JobsLoaded(jobs))
            before = self.state.active_ids()
            # Running jobs, and one last pass for those that just ended.
            active = any(j.state in ACTIVE for j in jobs)
            if any(j.remote_dir and (j.state in ACTIVE or j.id in before) for j in jobs):
                app.post_message(JobsSynced(await ops.sync_all(backend, progress=app.log_line)))
            self.state.succeeded()
        finally:
            self.state.done(time.monotonic(), active=active, watching=isinstance(app.screen, JobsScreen))

    def loaded(self, jobs: list[Job]) -> None:
        self.state.jobs = list(jobs)
        self._to_screen()

    def synced(self, results: list[Any]) -> None:
        when = self.app.clock().astimezone().strftime("%H:%M:%S")
        self.state.synced(((r.job_id, len(r.copied), r.pending) for r in results), when)
        self._to_screen()

    def _to_screen(self) -> None:
        for screen in self.app.screen_stack:
            if isinstance(screen, JobsScreen) and screen.is_mounted:
                screen.show(self.state.jobs)


def jobs_palette_entries() -> tuple[tuple[str, str, str], ...]:
    return (("jobs", "Jobs: scripts, their logs and results", "sync now, stop, resume"),)


__all__ = ["JobsPoller", "JobsScreen", "jobs_palette_entries"]
