"""What the app knows and decides, kept apart from Textual so it can be tested alone.

The app (`tui/app.py`) owns one `AppState`: the connection to the cloud, the rows the
panes show, the completion index built from them, when the instances are listed next,
and when jobs are polled. Widgets and workers live in the app; every decision about
*when* and *what* lives here. Imports no Textual.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from cloudsh.commands.complete import CompletionIndex, index_from
from cloudsh.commands.views import burn_rate
from cloudsh.models import Image, InstanceType, Job, Price, Snapshot, Volume

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend

#: Seconds between refreshes: fast while something changes state, backing off when idle.
FAST_REFRESH_S = 2.0
IDLE_REFRESH_S = (10.0, 20.0, 40.0, 60.0, 120.0)
#: Seconds between job listings (and result pulls) while a job runs or the jobs view is
#: open, and otherwise.
JOBS_ACTIVE_S = 4.0
JOBS_IDLE_S = 30.0
#: Job states in which a job is (about to be) running on its box.
JOB_ACTIVE = frozenset({"running", "starting"})


class BoxState(StrEnum):
    """An instance's EC2 state (compares equal to the plain string EC2 reports)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"

    @property
    def transitional(self) -> bool:
        """On its way to another state: the app refreshes fast while a box is."""
        return self in (BoxState.PENDING, BoxState.STOPPING, BoxState.SHUTTING_DOWN)


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One row of the Instances pane: an `ls --json` record, typed."""

    id: str
    name: str
    type: str
    state: BoxState
    market: str
    public_ip: str | None
    gpus: str
    price_per_hour: float | None
    az: str
    uptime_s: float | None
    cost_so_far: float | None
    #: Ids of the jobs its tags hold (for completion).
    jobs: tuple[str, ...] = ()
    #: False for a box cloudsh did not launch (a colleague's); `owner`: whose it looks like.
    managed: bool = True
    owner: str | None = None
    #: Its image family (`ubuntu-24.04`, `dlami-nvidia`, …), "" when unknown; `gpu_driver`
    #: False for a GPU box without the NVIDIA driver.
    image: str = ""
    gpu_driver: bool | None = None
    #: The state as a person reads it (`Instance.status`): EC2's, or why an interrupted box waits.
    status: str = ""
    #: A spot box stopped by an interruption: only EC2 starts it again.
    interrupted: bool = False

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> InstanceRow:
        return cls(
            id=r["id"], name=r["name"] or "", type=r["type"], state=BoxState(r["state"]), market=r["market"],
            public_ip=r["public_ip"], gpus=r["gpus"] or "", price_per_hour=r["price_per_hour"],
            az=r.get("az") or "", uptime_s=r.get("uptime_s"), cost_so_far=r.get("cost_so_far"),
            jobs=tuple(r.get("jobs") or ()), managed=r.get("managed", True), owner=r.get("owner"),
            image=r.get("image_family") or "", gpu_driver=r.get("gpu_driver"),
            status=r.get("status") or "", interrupted=bool(r.get("interrupted")),
        )

    @property
    def label(self) -> str:
        """How to name the box to a person: its Name, else its id."""
        return self.name or self.id

    @property
    def handle(self) -> str:
        """How the app's keys name the box to a command: its Name, or its id for a box
        cloudsh did not launch (a colleague's may share a Name with one of cloudsh's,
        which the Name would mean). Destructive keys still need the id typed (`ops.owners`)."""
        return self.label if self.managed else self.id


#: Seconds a box's idle status is shown before it is asked again (an SSH round trip).
IDLE_STATUS_S = 60.0
#: Boxes asked at once; the others wait for the next round (the next listing).
IDLE_BATCH = 20
#: Seconds before a box that could not say its idle status is asked again.
IDLE_RETRY_S = 10.0


@dataclass
class IdleColumn:
    """The Instances pane's idle column: what each running box of cloudsh's last said of its
    idle stop (`ops.idle.short`). Asked after a listing, never before it shows, at most
    every IDLE_STATUS_S per box; a box not running is not asked (and forgotten)."""

    texts: dict[str, tuple[str, float]] = field(default_factory=dict)
    asking: bool = False

    @staticmethod
    def askable(row: InstanceRow) -> bool:
        return row.state is BoxState.RUNNING and row.managed

    def due(self, rows: Sequence[InstanceRow], now: float) -> list[str]:
        """Ids of the boxes to ask now (in the order given), none while a round is under way."""
        for row in rows:
            if not self.askable(row):
                self.texts.pop(row.id, None)  # stopped: asked afresh once it runs again
        if self.asking:
            return []
        stale = now - IDLE_STATUS_S
        ids = [r.id for r in rows if self.askable(r) and self.texts.get(r.id, ("", stale))[1] <= stale]
        self.asking = bool(ids)
        return ids[:IDLE_BATCH]

    def took(self, texts: Mapping[str, str], now: float) -> None:
        """The answers; a box that could not say (`?`, e.g. still booting) is asked again
        after IDLE_RETRY_S rather than a minute later."""
        self.asking = False
        retry = now - IDLE_STATUS_S + IDLE_RETRY_S
        self.texts.update((iid, (text, retry if text == "?" else now)) for iid, text in texts.items())

    def text(self, row: InstanceRow) -> str:
        """The cell: `-` for a box not asked, `…` until it answered."""
        return self.texts.get(row.id, ("…", 0.0))[0] if self.askable(row) else "-"


class Phase(Enum):
    """Where the app is with the cloud."""

    CONNECTING = "connecting"
    READY = "ready"
    FAILED = "failed"


@dataclass
class Connection:
    """The backend's lifecycle: connecting, then ready (with a backend) or failed."""

    phase: Phase = Phase.CONNECTING
    backend: Backend | None = None
    label: str = ""
    error: str = ""
    #: An attempt to connect is running: a command typed meanwhile waits for it.
    underway: bool = False

    @property
    def awaited(self) -> bool:
        """Whether a command that needs the cloud should wait rather than fail now."""
        return self.underway and self.phase is Phase.CONNECTING

    def ready(self, backend: Backend) -> None:
        self.phase, self.backend, self.label, self.error = Phase.READY, backend, backend.label, ""
        self.underway = False

    def failed(self, error: str) -> None:
        # A failed region switch keeps the backend it had: the app still works with it.
        self.phase, self.error = (Phase.READY if self.backend is not None else Phase.FAILED), error
        self.underway = False


@dataclass
class RefreshSchedule:
    """When the instances are listed next. One refresh at a time: one asked for while
    another runs becomes one more run after it. Fast while something changes state (a
    command runs, a box is pending or stopping), backing off while nothing does."""

    running: bool = False
    again: bool = False
    #: Commands running now.
    busy: int = 0
    idle_step: int = 0
    #: `time.monotonic()` at which the next refresh is due; None while one runs.
    next_at: float | None = None

    def start(self) -> bool:
        """A refresh is asked for: True to start one now (it is then running)."""
        if self.running:
            self.again = True
            return False
        self.running = True
        return True

    def finished(self) -> bool:
        """The running refresh ended: True to start the one asked for meanwhile."""
        self.running = False
        again, self.again = self.again, False
        return again

    def plan(self, now: float, changing: bool) -> float:
        """Set the next refresh after one ended; the delay chosen."""
        if changing or self.busy:
            self.idle_step = 0
            delay = FAST_REFRESH_S
        else:
            delay = IDLE_REFRESH_S[min(self.idle_step, len(IDLE_REFRESH_S) - 1)]
            self.idle_step += 1
        self.next_at = now + delay
        return delay

    def tick(self, now: float) -> bool:
        """Called every half second: True when a refresh is due now."""
        due = self.next_at
        if due is not None and now >= due and not self.running:
            self.next_at = None
            return True
        if self.busy and due is not None and due - now > FAST_REFRESH_S:
            self.next_at = now + FAST_REFRESH_S  # a command started: its effect shows soon
        return False

    def reset(self) -> None:
        """Something happened (a key, a finished command): the back-off starts over."""
        self.idle_step = 0


@dataclass
class JobsPoll:
    """Jobs listed (and their results pulled home) every few seconds while one runs."""

    jobs: list[Job] = field(default_factory=list)
    #: job id -> (files copied home, files pending (-1 unknown), when last copied)
    results: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    due: float = 0.0
    polling: bool = False
    error: str = ""

    def start(self, now: float, *, ready: bool, force: bool = False) -> bool:
        """True to poll now. Not before the cloud is ready, nor twice at once."""
        if not ready or self.polling:
            if force:
                self.due = 0.0  # as soon as it can
            return False
        if not force and now < self.due:
            return False
        self.polling = True
        return True

    def done(self, now: float, *, active: bool, watching: bool) -> None:
        self.polling = False
        self.due = now + (JOBS_ACTIVE_S if active or watching else JOBS_IDLE_S)

    def active_ids(self) -> set[str]:
        return {j.id for j in self.jobs if j.state in JOB_ACTIVE}

    def failed(self, error: str) -> bool:
        """A poll failed: True when this error is new (said once, not every few seconds)."""
        new = error != self.error
        self.error = error
        return new

    def succeeded(self) -> None:
        self.error = ""

    def synced(self, copied: Iterable[tuple[str, int, int]], when: str) -> None:
        """(job id, files copied now, files pending) of one pull."""
        for job_id, count, pending in copied:
            home, _, _ = self.results.get(job_id, (0, 0, ""))
            self.results[job_id] = (home + count, pending, when)


@dataclass
class AppState:
    """Everything the app knows, and the decisions made from it."""

    connection: Connection = field(default_factory=Connection)
    schedule: RefreshSchedule = field(default_factory=RefreshSchedule)
    jobs: JobsPoll = field(default_factory=JobsPoll)
    #: The listing as `ls --json` records (saved for the next start) and as rows.
    records: list[dict[str, Any]] = field(default_factory=list)
    rows: tuple[InstanceRow, ...] = ()
    price_rows: list[tuple[InstanceType, Price | None]] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    index: CompletionIndex = field(default_factory=CompletionIndex)
    #: The rows on screen come from the cache of the last session.
    stale: bool = False
    #: The first listing of this session is under way; the other panes wait for it.
    first_listing: bool = False
    #: A listing from the prefetch child is on screen, none of the app's own yet.
    prefetched: bool = False
    fresh_seen: bool = False
    #: (backend label, records) to save as the next start's cached listing.
    unsaved: tuple[str, list[dict[str, Any]]] | None = None

    def take_listing(self, records: list[dict[str, Any]], *, stale: bool) -> bool:
        """A listing arrived: False when it is to be dropped (a cached one after a fresh one)."""
        if not stale:
            self.stale = False
            self.fresh_seen = True
        elif not self.stale:
            return False
        self.records = records
        self.rows = tuple(InstanceRow.from_record(r) for r in records)
        self.rebuild_index()
        return True

    def forget_listing(self) -> None:
        """The cached listing was of another cloud."""
        self.stale = False
        self.records, self.rows = [], ()
        self.rebuild_index()

    def take_prices(self, rows: list[tuple[InstanceType, Price | None]]) -> None:
        self.price_rows = rows
        self.rebuild_index()

    def take_storage(self, volumes: list[Volume], snapshots: list[Snapshot], images: list[Image]) -> None:
        self.volumes, self.snapshots, self.images = volumes, snapshots, images
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """The completion index from what the panes hold: no listing of its own."""
        self.index = index_from(
            instances=self.rows,
            jobs={job: row.label for row in self.rows for job in row.jobs},
            types=[t.name for t, _ in self.price_rows],
            images=self.images, volumes=self.volumes, snapshots=self.snapshots,
        )

    @property
    def burn(self) -> float:
        return burn_rate(self.records)

    def changing(self) -> bool:
        """A box is between states: refresh fast."""
        return any(r.state.transitional for r in self.rows)

    def names(self) -> dict[str, str]:
        """Instance id -> what to call it (for the Volumes pane's "attached to")."""
        return {r.id: r.label for r in self.rows}


__all__ = [
    "AppState", "BoxState", "Connection", "IdleColumn", "InstanceRow", "JobsPoll", "Phase", "RefreshSchedule",
]
