"""Messages the app's workers post back to the UI, named as facts.

Workers never touch widgets: they post one of these and the app routes it. Frequent
ones (`ActivityLogged`, `InstancesLoaded`) may be coalesced by Textual's queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from textual.message import Message
from textual.worker import Worker

from cloudsh.models import Image, InstanceType, Price, Snapshot, SpotPricePoint, Volume


@dataclass
class BackendReady(Message):
    """The cloud is reachable (the sandbox is up, or AWS credentials are set)."""

    label: str
    notice: str = ""


@dataclass
class BackendFailed(Message):
    error: str


@dataclass
class InstancesLoaded(Message):
    """A fresh (or cached, `stale=True`) listing: `ls --json` records."""

    records: list[dict[str, Any]]
    stale: bool = False
    fetched_at: datetime | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, InstancesLoaded)


@dataclass
class PricesLoaded(Message):
    rows: list[tuple[InstanceType, Price | None]]
    source: str = ""
    fetched_at: datetime | None = None
    #: Why prices are missing (denied, throttled, unreachable, not sold); "" when none is.
    note: str = ""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PricesLoaded)


@dataclass
class SpotHistoryLoaded(Message):
    instance_type: str
    points: list[SpotPricePoint]


@dataclass
class StorageLoaded(Message):
    volumes: list[Volume]
    snapshots: list[Snapshot]
    images: list[Image]
    #: The region they are in: storage is costed at its list prices.
    region: str = "us-east-1"


@dataclass
class IdleStatusLoaded(Message):
    """What these boxes said of their idle stop, in a few characters each, by id."""

    texts: dict[str, str]


@dataclass
class RefreshFailed(Message):
    what: str
    error: str


@dataclass
class ActivityLogged(Message):
    """One line for the activity pane. `kind`: out, info, error, done."""

    text: str
    kind: str = "out"


@dataclass
class ActionFinished(Message):
    """A command or action ended; `error` is one readable line when it failed."""

    label: str
    status: int
    elapsed_s: float
    error: str | None = None
    #: The user said no to its question: nothing was done, and that is no failure.
    declined: bool = False


@dataclass
class TunnelChanged(Message):
    key: tuple[str, int]
    status: str = field(default="")


@dataclass
class JobsLoaded(Message):
    """`ops.jobs.list_jobs`: every job with its live state."""

    jobs: list[Any]  # cloudsh.models.Job

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsLoaded)


@dataclass
class JobsSynced(Message):
    """One pass of pulling results home: `ops.jobs.SyncResult`s."""

    results: list[Any]


@dataclass
class JobLogLoaded(Message):
    job_id: str
    lines: list[str]


@dataclass
class WorkerFailed(Message):
    """A widget's own worker raised: bubbles up to the app's one error route."""

    worker: Worker[Any]
