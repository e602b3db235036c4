"""Plain frozen records that cross every boundary (services -> ops -> commands -> UIs).

No boto3 dicts, SSH channels or widgets ever leave the service layer; only these.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: States in which an instance still "exists" for name resolution.
#: EC2's state reason for a spot box stopped by an interruption ("Find interrupted Spot
#: Instances", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/finding-an-interrupted-Spot-Instance.html).
SPOT_INTERRUPTED = "Server.SpotInstanceShutdown"
INTERRUPTED_STATUS = "interrupted: EC2 restarts it when capacity returns"
#: What a user can do about an interrupted box (`.format(name=...)`).
INTERRUPTED_HINT = (
    "wait (EC2 starts it when capacity returns and its jobs resume by themselves), or "
    "`cloudsh relaunch {name} [--spot|--on-demand]` for a new box from its disk now"
)
LIVE_STATES = frozenset({"pending", "running", "stopping", "stopped", "shutting-down"})

#: The tag cloudsh puts on everything it creates. A box without it was launched some other
#: way (a colleague on a shared account, the console, a script), and cloudsh treats it as
#: someone else's.
TAG_MANAGED = "cloudsh:managed"
#: Which image family a box runs (`image_family`): set at launch, and when its NVIDIA
#: driver is installed (`ops/gpu.py`); a frozen image passes it on to its boxes.
TAG_IMAGE_FAMILY = "cloudsh:image-family"
#: The families: Canonical's Ubuntu 24.04 LTS, and AWS's Deep Learning Base OSS NVIDIA
#: Driver GPU AMI (Ubuntu 24.04), which has the driver. Ubuntu with the driver installed
#: since is `ubuntu-24.04+nvidia`.
FAMILY_UBUNTU = "ubuntu-24.04"
FAMILY_DLAMI = "dlami-nvidia"
FAMILY_WITH_DRIVER = "+nvidia"
#: The owner of the official Ubuntu images (Canonical) and of the Deep Learning AMIs (Amazon).
CANONICAL_OWNER = "099720109477"
DLAMI_OWNER = "898082745236"
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
    def nvidia(self) -> bool:
        """Whether its GPUs are NVIDIA's (all EC2 GPU types but the AMD Radeon ones)."""
        return self.gpu_count > 0 and not self.gpu_model.lower().startswith("radeon")

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
    #: Its security groups' ids (their inbound rules decide who reaches it).
    security_groups: tuple[str, ...] = ()
    #: The volume mapped at its root device: the disk it boots from.
    root_volume: str | None = None
    #: EC2's code for why the box is in its state (`StateReason`), e.g. `Server.SpotInstanceShutdown`.
    state_reason: str = ""
    #: When it entered that state, where EC2 says (the time in `StateTransitionReason`).
    state_since: datetime | None = None

    @property
    def interrupted(self) -> bool:
        """A spot box stopped by an interruption: only EC2 starts it again, when capacity
        returns (EC2's state reason says so; nothing is remembered on this machine)."""
        return self.market == "spot" and self.state == "stopped" and self.state_reason == SPOT_INTERRUPTED

    def status(self, now: datetime | None = None) -> str:
        """The state as a person should read it: EC2's, or why an interrupted box waits."""
        if not self.interrupted:
            return self.state
        waited = ""
        if self.state_since is not None:
            s = int(max(0.0, ((now or datetime.now(UTC)) - self.state_since).total_seconds()))
            waited = f" (waiting {s // 3600}h{s % 3600 // 60:02d}m)" if s >= 3600 else f" (waiting {s // 60}m{s % 60:02d}s)"
        return INTERRUPTED_STATUS + waited

    @property
    def label(self) -> str:
        """How to name this instance to a person: its Name, else its id."""
        return self.name or self.id

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def image_family(self) -> str:
        """`ubuntu-24.04`, `dlami-nvidia`, `ubuntu-24.04+nvidia`, …; "" when unknown."""
        return self.tags.get(TAG_IMAGE_FAMILY, "")

    @property
    def has_nvidia_driver(self) -> bool | None:
        """Whether its image family has the NVIDIA driver; None when that is not known (no
        family, or a custom image's)."""
        family = self.image_family
        if family == FAMILY_DLAMI or family.endswith(FAMILY_WITH_DRIVER):
            return True
        return False if family == FAMILY_UBUNTU else None

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
    #: The region's lowest current spot price (that of `spot_az`).
    spot: float | None = None
    spot_az: str | None = None
    fetched_at: datetime | None = None
    source: str = ""
    #: The current spot price of every AZ that offers one: a spot box pays its own AZ's.
    spot_by_az: Mapping[str, float] = field(default_factory=dict)
    #: Why the on-demand or the spot price is missing ("" when both are known).
    note: str = ""

    @property
    def spot_saving(self) -> float | None:
        """Fraction saved by spot vs on-demand (0.7 = 70 % cheaper)."""
        if not self.on_demand or self.spot is None:
            return None
        return 1.0 - self.spot / self.on_demand


class Prices(Mapping[str, Price]):
    """Prices per instance type, and why the missing ones are missing.

    A type with neither price is absent and `missing` says why; `note` says why a whole
    source could not be asked (denied, throttled, unreachable), for every type it lacks.
    """

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        missing: Mapping[str, str] | None = None,
        note: str = "",
        unsold: frozenset[str] = frozenset(),
    ) -> None:
        self._prices = dict(prices or {})
        self.missing: Mapping[str, str] = dict(missing or {})
        self.note = note
        #: Types the on-demand source answered for with no price: not sold in the region.
        self.unsold = unsold

    def __getitem__(self, key: str) -> Price:
        return self._prices[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def __repr__(self) -> str:
        return f"Prices({self._prices!r}, missing={dict(self.missing)!r}, note={self.note!r})"

    def why(self, instance_type: str) -> str:
        """Why a price of this type is missing; "" when both are known."""
        price = self._prices.get(instance_type)
        return price.note if price is not None else self.missing.get(instance_type, self.note)


def box_hourly(price: Price | None, market: str, az: str = "") -> tuple[float | None, str]:
    """What a box of this market in this AZ pays per hour, and a note when that is a stand-in.

    EC2 prices spot per AZ, so a spot box pays its own AZ's price; when that is unknown,
    the region's lowest stands in and the note says so.
    """
    if price is None:
        return None, ""
    if market != "spot":
        return price.on_demand, ""
    if az in price.spot_by_az:
        return price.spot_by_az[az], ""
    if price.spot is not None:
        where = f"of {az} " if az else ""
        return price.spot, f"spot price {where}unknown; the region's lowest ({price.spot_az}) shown"
    if price.on_demand is not None:
        return price.on_demand, "no spot price known; the on-demand price shown"
    return None, ""


def hourly_cost(price: Price | None, market: str, az: str = "") -> float | None:
    """What a box of this market pays per hour: its AZ's spot price for a spot box when known."""
    return box_hourly(price, market, az)[0]


# -- storage and address prices per region ------------------------------------------------

#: Published list prices, as on AWS's "Amazon EBS pricing" page
#: (https://aws.amazon.com/ebs/pricing/), read 2025-05-01: $ per GB-month of provisioned
#: volume storage per type, and of standard-tier snapshot storage. Regions not listed
#: fall back to us-east-1's prices, and `ebs_prices` says so.
EBS_PRICES_DATE = "2025-05-01"
_EBS_COLUMNS = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard", "snapshot")
_EBS_ROWS = {
    #                gp3     gp2    io1     io2     st1     sc1     standard snapshot
    "us-east-1":      (0.08,   0.10,  0.125,  0.125,  0.045,  0.015,  0.05,  0.05),
    "us-east-2":      (0.08,   0.10,  0.125,  0.125,  0.045,  0.015,  0.05,  0.05),
    "us-west-1":      (0.096,  0.12,  0.138,  0.138,  0.054,  0.018,  0.08,  0.055),
    "us-west-2":      (0.08,   0.10,  0.125,  0.125,  0.045,  0.015,  0.05,  0.05),
    "ca-central-1":   (0.088,  0.11,  0.138,  0.138,  0.05,   0.0168, 0.055, 0.055),
    "sa-east-1":      (0.152,  0.19,  0.238,  0.238,  0.086,  0.028,  0.12,  0.068),
    "eu-west-1":      (0.088,  0.11,  0.138,  0.138,  0.05,   0.0168, 0.055, 0.05),
    "eu-west-2":      (0.0928, 0.116, 0.145,  0.145,  0.053,  0.0174, 0.058, 0.053),
    "eu-west-3":      (0.0928, 0.116, 0.145,  0.145,  0.053,  0.0174, 0.058, 0.053),
    "eu-central-1":   (0.0952, 0.119, 0.149,  0.149,  0.054,  0.018,  0.059, 0.054),
    "eu-north-1":     (0.0836, 0.1045, 0.1311, 0.1311, 0.0473, 0.0158, 0.0525, 0.0525),
    "ap-northeast-1": (0.096,  0.12,  0.142,  0.142,  0.054,  0.018,  0.08,  0.05),
    "ap-northeast-2": (0.0912, 0.114, 0.1278, 0.1278, 0.051,  0.0174, 0.08,  0.05),
    "ap-southeast-1": (0.096,  0.12,  0.138,  0.138,  0.054,  0.018,  0.08,  0.05),
    "ap-southeast-2": (0.096,  0.12,  0.138,  0.138,  0.054,  0.018,  0.08,  0.055),
    "ap-south-1":     (0.0912, 0.114, 0.131,  0.131,  0.051,  0.0174, 0.08,  0.05),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class EbsPrices:
    """One region's EBS list prices, $ per GB-month."""

    region: str
    volume: Mapping[str, float]
    snapshot: float
    #: Where the numbers come from, e.g. a fallback to another region's list.
    source: str = ""
    #: False when the region has no list of its own here and us-east-1's stands in.
    listed: bool = True

    def volume_gb_month(self, volume_type: str) -> float:
        return self.volume.get(volume_type, self.volume["gp3"])


def ebs_prices(region: str) -> EbsPrices:
    """The EBS list prices of `region` (us-east-1's, labelled so, for a region not listed)."""
    row = _EBS_ROWS.get(region)
    source = f"Amazon EBS pricing, {region}, as published {EBS_PRICES_DATE}"
    listed = row is not None
    if row is None:
        row = _EBS_ROWS["us-east-1"]
        source = f"no EBS list price of {region} known; us-east-1's ({EBS_PRICES_DATE}) shown"
    return EbsPrices(region, dict(zip(_EBS_COLUMNS[:-1], row[:-1], strict=True)), row[-1], source, listed)


#: The volume types EBS offers (the columns of the list above).
VOLUME_TYPES = _EBS_COLUMNS[:-1]

#: Public IPv4 addresses bill $0.005 per hour each, in use or idle, in every commercial
#: region since 2024-02-01 (AWS "Amazon VPC pricing", https://aws.amazon.com/vpc/pricing/,
#: "Public IPv4 Address" tab).
IPV4_HOUR = 0.005
#: AWS's pricing pages count 730 hours in a month (e.g. the examples on "Amazon EBS pricing").
HOURS_PER_MONTH = 730.0


def ipv4_hourly(region: str) -> float:
    """$ per hour of one public IPv4 address in `region` (the same in every region today)."""
    return IPV4_HOUR


def volume_monthly(v: Volume, region: str) -> float:
    return v.size_gb * ebs_prices(region).volume_gb_month(v.volume_type)


def snapshot_monthly(size_gb: int, region: str) -> float:
    """An upper bound: EBS bills a snapshot for the blocks it holds, at most its volume's size."""
    return size_gb * ebs_prices(region).snapshot


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
class ElasticIp:
    """An Elastic IP address; `association_id` is None when it is attached to nothing."""

    allocation_id: str
    public_ip: str
    association_id: str | None = None
    instance_id: str | None = None
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


def image_family(img: Image) -> str:
    """The family a box launched from `img` runs: the image's own family tag (a frozen
    box's), else what its owner and name say, else "custom"."""
    if img.tags.get(TAG_IMAGE_FAMILY):
        return img.tags[TAG_IMAGE_FAMILY]
    if img.owner_id == DLAMI_OWNER and "Nvidia Driver" in img.name:
        return FAMILY_DLAMI
    if img.owner_id == CANONICAL_OWNER and "ubuntu-noble-24.04" in img.name:
        return FAMILY_UBUNTU
    return "custom"


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


SSH_PORT = 22
#: Starts the description of the inbound rules cloudsh adds: "cloudsh: this machine
#: (<key pair>)", naming the machine's key so two machines on one account never revoke
#: each other's rules. Exactly this text marks the rules older versions added.
SSH_RULE_DESCRIPTION = "cloudsh: this machine"


@dataclass(frozen=True, slots=True)
class SshRule:
    """One address range an inbound rule lets reach TCP port 22."""

    group_id: str
    cidr: str
    description: str
    #: A rule for exactly TCP 22 (as cloudsh adds them), not a wider one that covers it.
    exact: bool


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
#: EC2 allows tag values of up to 256 characters, and 50 tags per resource ("Tag your
#: Amazon EC2 resources", Tag restrictions).
TAG_VALUE_MAX = 256
#: At most this many job tags on a box; finished jobs beyond the newest `JOB_TAGS_KEPT`
#: move to a record file on the box (`ops/jobs/archive.py`) before another job starts.
JOB_TAGS_MAX = 20
JOB_TAGS_KEPT = 5


@dataclass(frozen=True)
class JobTag:
    """What the tag `cloudsh:job:<id>` holds (short keys: a tag value has 256 characters).

    `local_dir` is read from tags older records wrote; it is never written again: where
    a laptop keeps results is that laptop's own business (`ops/jobs/box.remember_local`).
    """

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
        """Compact JSON, whole: when it would pass EC2's 256 characters the script's name
        is shortened (the job's files on the box keep it whole), never the JSON cut."""
        doc: dict[str, Any] = {"f": self.script, "s": self.state, "n": self.runs}
        for key, value in (("t", self.started), ("e", self.ended), ("b", self.before_s)):
            if value:
                doc[key] = round(value)
        if self.exit_status is not None:
            doc["x"] = self.exit_status
        if self.remote_dir:
            doc["r"] = self.remote_dir
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        while len(text) > TAG_VALUE_MAX and doc["f"]:
            cut = len(text) - TAG_VALUE_MAX + 1  # and one for the "~" that marks the cut
            doc["f"] = doc["f"][:-cut] + "~" if len(doc["f"]) > cut else ""
            text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        return text

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
