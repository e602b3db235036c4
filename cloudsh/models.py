"""Plain frozen records that cross every boundary (services -> ops -> commands -> UIs).

No boto3 dicts, SSH channels or widgets ever leave the service layer; only these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: States in which an instance still "exists" for name resolution.
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped", "shutting-down"})

#: The tag cloudsh puts on everything it creates. A box without it was launched some other
#: way (a colleague on a shared account, the console, a script), and cloudsh treats it as
#: someone else's.
TAG_MANAGED = "cloudsh:managed"
#: Tags people put on a box to say whose it is, most telling first.
OWNER_TAGS = ("Owner", "owner", "CreatedBy")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True, slots=True)
class InstanceType:
    """Facts about an instance type, from DescribeInstanceTypes."""

    name: str
    vcpus: int
    memory_gib: float
    gpu_count: int = 0
    gpu_model: str = ""
    gpu_memory_gib: float = 0.0
    architectures: tuple[str, ...] = ("x86_64",)
    spot_supported: bool = True
    instance_storage_gb: int = 0
    """Local NVMe/SSD instance store: fast, and lost when the box stops or terminates."""

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def gpus(self) -> str:
        """`"1x A10G"`, or `""` for a CPU-only type."""
        return f"{self.gpu_count}x {self.gpu_model}" if self.gpu_count else ""


@dataclass(frozen=True, slots=True)
class Instance:
    """One EC2 instance as cloudsh sees it."""

    id: str
    name: str
    type: str
    state: str
    market: str = "on-demand"  # "spot" | "on-demand"
    az: str = ""
    public_ip: str | None = None
    private_ip: str | None = None
    launch_time: datetime | None = None
    image_id: str = ""
    key_name: str | None = None
    architecture: str = "x86_64"
    spot_request_id: str | None = None
    volume_ids: tuple[str, ...] = ()
    #: The attached volumes that EC2 deletes when the instance terminates (its root disk).
    deleted_on_termination: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How to name this instance to a person: its Name, else its id."""
        return self.name or self.id

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def managed(self) -> bool:
        """Whether cloudsh launched this box (it has cloudsh's tag)."""
        return TAG_MANAGED in self.tags

    @property
    def owner(self) -> str | None:
        """Whose the box looks like: an owner tag, else its key pair's name, else the IAM
        principal in a `createdBy`-style tag (e.g. `aws:createdBy` = `IAMUser:AIDA…:alice`)."""
        for key in OWNER_TAGS:
            if self.tags.get(key):
                return self.tags[key]
        if self.key_name:
            return self.key_name
        for key, value in self.tags.items():
            if key.lower().rsplit(":", 1)[-1] == "createdby" and value:
                return value.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        return None

    def uptime_s(self, now: datetime | None = None) -> float | None:
        if self.state != "running" or self.launch_time is None:
            return None
        return max(0.0, ((now or datetime.now(UTC)) - self.launch_time).total_seconds())


@dataclass(frozen=True, slots=True)
class Price:
    """What an instance type costs per hour, and where that number came from."""

    instance_type: str
    on_demand: float | None
    spot: float | None = None
    spot_az: str | None = None
    fetched_at: datetime | None = None
    source: str = ""

    @property
    def spot_saving(self) -> float | None:
        """Fraction saved by spot vs on-demand (0.7 = 70 % cheaper)."""
        if not self.on_demand or self.spot is None:
            return None
        return 1.0 - self.spot / self.on_demand


def hourly_cost(price: Price | None, market: str) -> float | None:
    """What a box of this market pays per hour: the spot price for spot boxes when known."""
    if price is None:
        return None
    if market == "spot" and price.spot is not None:
        return price.spot
    return price.on_demand


#: us-east-1 EBS list prices, $ per GB-month (aws.amazon.com/ebs/pricing, 2026-11).
VOLUME_GB_MONTH = {"gp3": 0.08, "gp2": 0.10, "io1": 0.125, "io2": 0.125, "st1": 0.045, "sc1": 0.015, "standard": 0.05}
SNAPSHOT_GB_MONTH = 0.05


def volume_monthly(v: Volume) -> float:
    return v.size_gb * VOLUME_GB_MONTH.get(v.volume_type, VOLUME_GB_MONTH["gp3"])


def snapshot_monthly(size_gb: int) -> float:
    """An upper bound: EBS bills a snapshot for the blocks it holds, at most its volume's size."""
    return size_gb * SNAPSHOT_GB_MONTH


@dataclass(frozen=True, slots=True)
class SpotPricePoint:
    instance_type: str
    az: str
    price: float
    at: datetime


@dataclass(frozen=True, slots=True)
class Volume:
    id: str
    name: str
    size_gb: int
    state: str
    az: str = ""
    volume_type: str = "gp3"
    attached_to: str | None = None
    device: str | None = None
    delete_on_termination: bool = False
    snapshot_id: str | None = None
    created: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Snapshot:
    id: str
    name: str
    volume_id: str
    size_gb: int
    state: str
    started: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Image:
    """An AMI as registered. `root_device` is the device name its root volume is mapped
    on (a launch mapping on any other name adds a volume rather than sizing the root);
    `root_size_gb` is its root snapshot's size, the smallest root a box of it can have
    (0 when the image does not say)."""

    id: str
    name: str
    state: str
    architecture: str = "x86_64"
    created: datetime | None = None
    owner_id: str = ""
    description: str = ""
    snapshot_ids: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    root_device: str = ""
    root_size_gb: int = 0


@dataclass(frozen=True, slots=True)
class HostInfo:
    """Where and how to reach an instance over SSH.

    `host_key_alias` names the instance in cloudsh's known-hosts file (its id), so a
    box keeps its pinned key when its address or port changes. `expected_host_keys`
    are keys learnt out of band (sandbox state, EC2 console output) in OpenSSH
    public-key format; when present, a first connection is checked against them.
    """

    instance_id: str
    name: str
    host: str
    port: int
    user: str
    key_path: str
    host_key_alias: str
    expected_host_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_status: int

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True, slots=True)
class Tunnel:
    instance: str
    local_port: int
    remote_port: int
    remote_host: str = "localhost"

    @property
    def url(self) -> str:
        return f"http://localhost:{self.local_port}/"


@dataclass(frozen=True, slots=True)
class Job:
    """A script running detached on a box (`cloudsh script`); its record lives in EC2 tags.

    `state`: starting, running, finished (see `exit_status`), interrupted (spot notice or
    the box stopped under it), stopped (`job stop`), lost (the box or its files are gone).
    """

    id: str
    instance_id: str
    instance_name: str
    script: str
    state: str
    exit_status: int | None = None
    started: datetime | None = None
    ended: datetime | None = None
    runtime_s: float = 0.0
    runs: int = 1
    remote_dir: str = ""
    local_dir: str = ""
    cost: float | None = None
    last_lines: tuple[str, ...] = ()


def to_jsonable(value: Any) -> Any:
    """Records -> plain JSON values (datetimes as ISO 8601)."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: to_jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


# -- the job record in EC2 tags --------------------------------------------------------

JOB_TAG_PREFIX = "cloudsh:job:"
#: EC2 allows tag values of up to 256 characters.
TAG_VALUE_MAX = 256


@dataclass(frozen=True)
class JobTag:
    """What the tag `cloudsh:job:<id>` holds (short keys: a tag value has 256 characters)."""

    script: str
    state: str
    started: float | None = None
    ended: float | None = None
    exit_status: int | None = None
    remote_dir: str = ""
    local_dir: str = ""
    runs: int = 1
    before_s: float = 0.0  # runtime of earlier runs (before a resume)

    def encode(self) -> str:
        doc: dict[str, Any] = {"f": self.script, "s": self.state, "n": self.runs}
        for key, value in (("t", self.started), ("e", self.ended), ("b", self.before_s)):
            if value:
                doc[key] = round(value)
        if self.exit_status is not None:
            doc["x"] = self.exit_status
        if self.remote_dir:
            doc["r"] = self.remote_dir
        if self.local_dir:
            doc["l"] = self.local_dir
        text = json.dumps(doc, separators=(",", ":"))
        if len(text) > TAG_VALUE_MAX:  # the local dir is also remembered on this machine
            doc.pop("l", None)
            text = json.dumps(doc, separators=(",", ":"))
        return text[:TAG_VALUE_MAX]

    @classmethod
    def decode(cls, text: str) -> JobTag | None:
        try:
            doc = json.loads(text)
            return cls(
                script=str(doc.get("f", "")),
                state=str(doc.get("s", "lost")),
                started=float(doc["t"]) if doc.get("t") else None,
                ended=float(doc["e"]) if doc.get("e") else None,
                exit_status=int(doc["x"]) if doc.get("x") is not None else None,
                remote_dir=str(doc.get("r", "")),
                local_dir=str(doc.get("l", "")),
                runs=int(doc.get("n", 1)),
                before_s=float(doc.get("b", 0.0)),
            )
        except (ValueError, TypeError, AttributeError):
            return None


def job_tags(inst: Instance) -> dict[str, JobTag]:
    out = {}
    for key, value in inst.tags.items():
        if key.startswith(JOB_TAG_PREFIX):
            tag = JobTag.decode(value)
            if tag is not None:
                out[key.removeprefix(JOB_TAG_PREFIX)] = tag
    return out
