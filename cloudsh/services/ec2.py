"""The async EC2 service: every EC2 API call cloudsh makes goes through here.

boto3 blocks, so each call runs in a worker thread (`asyncio.to_thread`) with that
thread's own client (see `aws.ClientFactory`). Only `models` records leave this module;
botocore errors become `CloudshError`s that say what to do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudsh.errors import (
    Ambiguous,
    AWSError,
    CapacityError,
    CloudshError,
    CredentialsError,
    InvalidState,
    NotFound,
    UsageError,
)
from cloudsh.models import LIVE_STATES, Image, Instance, InstanceType, Snapshot, Volume
from cloudsh.services.aws import BotoCoreError, ClientError, ClientFactory

#: Canonical's AWS account, owner of the official Ubuntu images.
CANONICAL = "099720109477"
#: SSM public parameters naming the current Ubuntu LTS image per architecture.
UBUNTU_SSM = "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"
UBUNTU_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*"
_SSM_ARCH = {"x86_64": "amd64", "arm64": "arm64"}

#: Tag keys cloudsh writes; the cloud is the source of truth, so what cloudsh must
#: remember about a box lives here.
TAG_MANAGED = "cloudsh:managed"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything RunInstances needs for one cloudsh box."""

    name: str
    instance_type: str
    image_id: str
    key_name: str
    security_group_id: str
    disk_gb: int
    spot: bool = False
    root_device: str = "/dev/sda1"
    tags: dict[str, str] = field(default_factory=dict)
    client_token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _tags(raw: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or ()}


def _instance(raw: dict[str, Any]) -> Instance:
    tags = _tags(raw.get("Tags"))
    return Instance(
        id=raw["InstanceId"],
        name=tags.get("Name", ""),
        type=raw.get("InstanceType", ""),
        state=raw.get("State", {}).get("Name", "unknown"),
        market="spot" if raw.get("InstanceLifecycle") == "spot" else "on-demand",
        az=raw.get("Placement", {}).get("AvailabilityZone", ""),
        public_ip=raw.get("PublicIpAddress") or None,
        private_ip=raw.get("PrivateIpAddress") or None,
        launch_time=raw.get("LaunchTime"),
        image_id=raw.get("ImageId", ""),
        key_name=raw.get("KeyName"),
        architecture=raw.get("Architecture", "x86_64"),
        spot_request_id=raw.get("SpotInstanceRequestId"),
        volume_ids=tuple(
            m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", ()) if "Ebs" in m
        ),
        deleted_on_termination=tuple(
            m["Ebs"]["VolumeId"]
            for m in raw.get("BlockDeviceMappings", ())
            if m.get("Ebs", {}).get("DeleteOnTermination")
        ),
        tags=tags,
    )


def _instance_type(raw: dict[str, Any]) -> InstanceType:
    gpu = raw.get("GpuInfo") or {}
    gpus = gpu.get("Gpus") or []
    return InstanceType(
        name=raw["InstanceType"],
        vcpus=int(raw.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gib=round(raw.get("MemoryInfo", {}).get("SizeInMiB", 0) / 1024, 2),
        gpu_count=sum(int(g.get("Count", 0)) for g in gpus),
        gpu_model=gpus[0].get("Name", "") if gpus else "",
        gpu_memory_gib=round(gpu.get("TotalGpuMemoryInMiB", 0) / 1024, 1),
        architectures=tuple(raw.get("ProcessorInfo", {}).get("SupportedArchitectures", ())),
        spot_supported="spot" in raw.get("SupportedUsageClasses", ("spot",)),
        instance_storage_gb=int((raw.get("InstanceStorageInfo") or {}).get("TotalSizeInGB", 0)),
    )


def _image(raw: dict[str, Any]) -> Image:
    tags = _tags(raw.get("Tags"))
    created = raw.get("CreationDate")
    return Image(
        id=raw["ImageId"],
        name=raw.get("Name") or tags.get("Name", ""),
        state=raw.get("State", ""),
        architecture=raw.get("Architecture", "x86_64"),
        created=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
        owner_id=raw.get("OwnerId", ""),
        description=raw.get("Description", "") or "",
        snapshot_ids=tuple(
            m["Ebs"]["SnapshotId"]
            for m in raw.get("BlockDeviceMappings", ())
            if m.get("Ebs", {}).get("SnapshotId")
        ),
        tags=tags,
    )


def _volume(raw: dict[str, Any]) -> Volume:
    tags = _tags(raw.get("Tags"))
    att = (raw.get("Attachments") or [{}])[0]
    return Volume(
        id=raw["VolumeId"],
        name=tags.get("Name", ""),
        size_gb=int(raw.get("Size", 0)),
        state=raw.get("State", ""),
        az=raw.get("AvailabilityZone", ""),
        volume_type=raw.get("VolumeType", ""),
        attached_to=att.get("InstanceId"),
        device=att.get("Device"),
        delete_on_termination=bool(att.get("DeleteOnTermination", False)),
        snapshot_id=raw.get("SnapshotId") or None,
        created=raw.get("CreateTime"),
        tags=tags,
    )


def _snapshot(raw: dict[str, Any]) -> Snapshot:
    tags = _tags(raw.get("Tags"))
    return Snapshot(
        id=raw["SnapshotId"],
        name=tags.get("Name", ""),
        volume_id=raw.get("VolumeId", ""),
        size_gb=int(raw.get("VolumeSize", 0)),
        state=raw.get("State", ""),
        started=raw.get("StartTime"),
        tags=tags,
    )


def closest(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


class EC2Service:
    """Async EC2 operations for one account and region."""

    def __init__(self, clients: ClientFactory, *, cache_dir: Path | None = None) -> None:
        self.clients = clients
        self.region = clients.target.region
        self._types: dict[str, InstanceType] = {}
        self._type_names: tuple[str, ...] | None = None
        self._cache_file = (
            cache_dir / f"instance-types-{self._cache_key()}.json" if cache_dir else None
        )
        self._load_type_cache()

    # -- plumbing ---------------------------------------------------------------

    def _cache_key(self) -> str:
        t = self.clients.target
        return f"{'sandbox' if t.sandbox else 'aws'}-{t.region}"

    def _load_type_cache(self) -> None:
        if not self._cache_file:
            return
        try:
            raw = json.loads(self._cache_file.read_text())
            if time.time() - raw["fetched_at"] < 7 * 86400:
                self._types = {
                    k: InstanceType(**{**v, "architectures": tuple(v["architectures"])})
                    for k, v in raw["types"].items()
                }
                self._type_names = tuple(raw["names"]) if raw.get("names") else None
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a missing or stale cache is simply refetched

    def _save_type_cache(self) -> None:
        if not self._cache_file:
            return
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            data = {
                "fetched_at": time.time(),
                "names": list(self._type_names or ()),
                "types": {
                    k: {f: getattr(v, f) for f in v.__dataclass_fields__}
                    for k, v in self._types.items()
                },
            }
            tmp = self._cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self._cache_file)
        except OSError:
            pass  # caching is an optimisation; never fail a command over it

    def _call_sync(self, op: str, **kwargs: Any) -> Any:
        client = self.clients.client("ec2")
        try:
            return getattr(client, op)(**kwargs)
        except ClientError as exc:
            raise translate(exc, self.clients.target.profile) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One EC2 API call, off the event loop."""
        return await asyncio.to_thread(self._call_sync, op, **kwargs)

    def _paginate_sync(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        client = self.clients.client("ec2")
        out: list[Any] = []
        try:
            for page in client.get_paginator(op).paginate(**kwargs):
                out.extend(page.get(key, ()))
        except ClientError as exc:
            raise translate(exc, self.clients.target.profile) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None
        return out

    async def paginate(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        return await asyncio.to_thread(self._paginate_sync, op, key, **kwargs)

    # -- instances --------------------------------------------------------------

    def list_instances_sync(
        self, *, include_terminated: bool = False, ids: Sequence[str] | None = None
    ) -> list[Instance]:
        kwargs: dict[str, Any] = {}
        if ids:
            kwargs["InstanceIds"] = list(ids)
        elif not include_terminated:
            kwargs["Filters"] = [{"Name": "instance-state-name", "Values": sorted(LIVE_STATES)}]
        if not ids:
            kwargs["PaginationConfig"] = {"PageSize": 1000}
        reservations = self._paginate_sync("describe_instances", "Reservations", **kwargs)
        found = [_instance(i) for r in reservations for i in r.get("Instances", ())]
        return sorted(found, key=lambda i: (i.name or "~", i.id))

    async def list_instances(
        self, *, include_terminated: bool = False, ids: Sequence[str] | None = None
    ) -> list[Instance]:
        """All instances (one DescribeInstances call per page, none per instance)."""
        return await asyncio.to_thread(
            self.list_instances_sync, include_terminated=include_terminated, ids=ids
        )

    async def get_instance(self, instance_id: str) -> Instance:
        found = await self.list_instances(ids=[instance_id])
        if not found:
            raise NotFound(f"no instance {instance_id}", "list them with `cloudsh ls --all`")
        return found[0]

    async def find(self, name: str) -> Instance:
        """An instance by Name tag (unique among non-terminated instances) or id."""
        if name.startswith("i-"):
            found = await self.list_instances(include_terminated=True)
            for inst in found:
                if inst.id == name:
                    return inst
            raise NotFound(f"no instance {name}", "list them with `cloudsh ls --all`")
        return resolve_name(name, await self.list_instances())

    async def start(self, ids: Sequence[str]) -> None:
        await self.call("start_instances", InstanceIds=list(ids))

    async def stop(self, ids: Sequence[str]) -> None:
        await self.call("stop_instances", InstanceIds=list(ids))

    async def terminate(self, ids: Sequence[str]) -> None:
        await self.call("terminate_instances", InstanceIds=list(ids))

    async def set_type(self, instance_id: str, instance_type: str) -> None:
        await self.call(
            "modify_instance_attribute",
            InstanceId=instance_id,
            InstanceType={"Value": instance_type},
        )

    async def set_tags(self, resource_ids: Sequence[str], tags: dict[str, str]) -> None:
        await self.call(
            "create_tags",
            Resources=list(resource_ids),
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    async def wait_state(
        self,
        ids: Sequence[str],
        states: Iterable[str],
        *,
        timeout: float = 600.0,
        interval: float = 0.25,
        max_interval: float = 2.0,
    ) -> list[Instance]:
        """Poll until every instance is in one of `states`.

        boto3's waiters poll every 15 s; a box that is ready in 3 s should not make
        the user wait 15, so this polls fast at first and backs off gently.
        """
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            found = await self.list_instances(ids=ids)
            if found and all(i.state in wanted for i in found):
                return found
            bad = [i for i in found if i.state == "terminated" and "terminated" not in wanted]
            if bad:
                raise InvalidState(
                    f"{bad[0].label} was terminated while waiting for it to be "
                    f"{'/'.join(sorted(wanted))}",
                    "check `cloudsh ls --all`",
                )
            if time.monotonic() > deadline:
                now = ", ".join(f"{i.label}: {i.state}" for i in found)
                raise CloudshError(
                    f"timed out waiting for {'/'.join(sorted(wanted))} ({now})",
                    "check the AWS console or try again",
                )
            await asyncio.sleep(interval)
            interval = min(max_interval, interval * 1.3)

    async def run_instance(self, spec: LaunchSpec) -> Instance:
        """RunInstances with an idempotency token: a retried call never makes two boxes."""
        tags = {"Name": spec.name, TAG_MANAGED: "1", **spec.tags}
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        kwargs: dict[str, Any] = dict(
            ImageId=spec.image_id,
            InstanceType=spec.instance_type,
            MinCount=1,
            MaxCount=1,
            KeyName=spec.key_name,
            SecurityGroupIds=[spec.security_group_id],
            ClientToken=spec.client_token,
            BlockDeviceMappings=[
                {
                    "DeviceName": spec.root_device,
                    "Ebs": {
                        "VolumeSize": spec.disk_gb,
                        "VolumeType": "gp3",
                        "Encrypted": True,
                        "DeleteOnTermination": True,
                    },
                }
            ],
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": tag_list},
                {"ResourceType": "volume", "Tags": tag_list},
            ],
        )
        if spec.spot:
            kwargs["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "persistent",
                    "InstanceInterruptionBehavior": "stop",
                },
            }
        raw = await self.call("run_instances", **kwargs)
        return _instance(raw["Instances"][0])

    async def console_output(self, instance_id: str) -> str:
        """The instance's console output as text (EC2 sends it base64-encoded)."""
        raw = await self.call("get_console_output", InstanceId=instance_id, Latest=True)
        text = str(raw.get("Output") or "")
        try:
            return base64.b64decode(text, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return text  # not base64: some endpoints send plain text

    async def cancel_spot_requests(self, request_ids: Sequence[str]) -> None:
        if request_ids:
            await self.call("cancel_spot_instance_requests", SpotInstanceRequestIds=list(request_ids))

    # -- instance types ---------------------------------------------------------

    async def instance_types(self, names: Iterable[str]) -> dict[str, InstanceType]:
        """Facts for the given types (cached in memory and on disk)."""
        wanted = {n for n in names if n}
        missing = sorted(wanted - self._types.keys())
        for start in range(0, len(missing), 100):
            batch = missing[start : start + 100]
            try:
                raw = await self.paginate("describe_instance_types", "InstanceTypes", InstanceTypes=batch)
            except AWSError as exc:
                if exc.code != "InvalidInstanceType":
                    raise
                # One bad name fails the whole batch: fall back to one call each.
                raw = []
                for name in batch:
                    try:
                        raw += await self.paginate(
                            "describe_instance_types", "InstanceTypes", InstanceTypes=[name]
                        )
                    except AWSError as inner:
                        if inner.code != "InvalidInstanceType":
                            raise
            for item in raw:
                t = _instance_type(item)
                self._types[t.name] = t
        if missing:
            self._save_type_cache()
        return {n: self._types[n] for n in wanted if n in self._types}

    async def type_names(self) -> tuple[str, ...]:
        """Every instance type offered in this region (cached)."""
        if self._type_names is None:
            raw = await self.paginate(
                "describe_instance_type_offerings", "InstanceTypeOfferings", LocationType="region"
            )
            self._type_names = tuple(sorted({o["InstanceType"] for o in raw}))
            self._save_type_cache()
        return self._type_names

    async def instance_type(self, name: str) -> InstanceType:
        """Facts for one type; an unknown name is a usage error that suggests the closest."""
        found, names = await asyncio.gather(self.instance_types([name]), self.type_names())
        if name in found and name in names:
            return found[name]
        if name in found:
            raise UsageError(
                f"{name} is not offered in {self.region}",
                "pick another type (`cloudsh prices`) or another region (--region)",
            )
        guess = closest(name, names)
        raise UsageError(
            f"unknown instance type {name!r} in {self.region}",
            f"did you mean {guess}?" if guess else "see `cloudsh prices` for the types on offer",
        )

    async def offered_in_az(self, instance_type: str, az: str) -> bool:
        raw = await self.paginate(
            "describe_instance_type_offerings",
            "InstanceTypeOfferings",
            LocationType="availability-zone",
            Filters=[
                {"Name": "instance-type", "Values": [instance_type]},
                {"Name": "location", "Values": [az]},
            ],
        )
        return bool(raw)

    # -- images -----------------------------------------------------------------

    async def images(self, *, owners: Sequence[str] = ("self",), **kwargs: Any) -> list[Image]:
        raw = await self.call("describe_images", Owners=list(owners), **kwargs)
        return sorted((_image(i) for i in raw.get("Images", ())), key=lambda i: i.name)

    async def find_image(self, id_or_name: str) -> Image:
        """An AMI by id, or by name among this account's images then Canonical's."""
        if id_or_name.startswith("ami-"):
            try:
                raw = await self.call("describe_images", ImageIds=[id_or_name])
            except AWSError as exc:
                raise NotFound(f"no image {id_or_name}", "list yours with `cloudsh images`") from exc
            if raw.get("Images"):
                return _image(raw["Images"][0])
            raise NotFound(f"no image {id_or_name}", "list yours with `cloudsh images`")
        for owners in (["self"], [CANONICAL]):
            found = await self.images(
                owners=owners, Filters=[{"Name": "name", "Values": [id_or_name]}]
            )
            if found:
                return max(found, key=lambda i: i.created or datetime.min.replace(tzinfo=UTC))
        raise NotFound(f"no image named {id_or_name!r}", "list yours with `cloudsh images`")

    async def default_image(self, architecture: str = "x86_64") -> Image:
        """The current Ubuntu LTS: the SSM public parameter, else the newest Canonical image."""
        arch = _SSM_ARCH.get(architecture, architecture)
        image_id: str | None = None
        try:
            ssm = await asyncio.to_thread(self.clients.client, "ssm")
            raw = await asyncio.to_thread(ssm.get_parameter, Name=UBUNTU_SSM.format(arch=arch))
            image_id = raw["Parameter"]["Value"]
        except (ClientError, BotoCoreError, KeyError):
            image_id = None  # not published here (or no SSM access): fall back
        if image_id:
            try:
                return await self.find_image(image_id)
            except NotFound:
                pass
        found = await self.images(
            owners=[CANONICAL],
            Filters=[
                {"Name": "name", "Values": [UBUNTU_NAME.format(arch=arch)]},
                {"Name": "architecture", "Values": [architecture]},
                {"Name": "state", "Values": ["available"]},
            ],
        )
        if not found:
            raise NotFound(
                f"no Ubuntu 24.04 image for {architecture} in {self.region}",
                "pass one with --image AMI_ID",
            )
        return max(found, key=lambda i: i.created or datetime.min.replace(tzinfo=UTC))

    # -- key pairs and security groups -----------------------------------------

    async def key_pair_exists(self, name: str) -> bool:
        raw = await self.call("describe_key_pairs", Filters=[{"Name": "key-name", "Values": [name]}])
        return bool(raw.get("KeyPairs"))

    async def import_key_pair(self, name: str, public_key: str) -> None:
        await self.call("import_key_pair", KeyName=name, PublicKeyMaterial=public_key.encode())

    async def delete_key_pair(self, name: str) -> None:
        await self.call("delete_key_pair", KeyName=name)

    async def find_security_group(self, name: str) -> str | None:
        raw = await self.call("describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]}])
        groups = raw.get("SecurityGroups", ())
        return str(groups[0]["GroupId"]) if groups else None

    async def security_group_cidrs(self, group_id: str) -> set[str]:
        raw = await self.call("describe_security_groups", GroupIds=[group_id])
        cidrs: set[str] = set()
        for perm in raw["SecurityGroups"][0].get("IpPermissions", ()):
            if perm.get("FromPort") == 22:
                cidrs.update(r["CidrIp"] for r in perm.get("IpRanges", ()))
        return cidrs

    async def create_security_group(self, name: str, description: str) -> str:
        raw = await self.call("create_security_group", GroupName=name, Description=description)
        return str(raw["GroupId"])

    async def allow_ssh(self, group_id: str, cidr: str) -> None:
        try:
            await self.call(
                "authorize_security_group_ingress",
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": cidr, "Description": "cloudsh: this machine"}],
                    }
                ],
            )
        except AWSError as exc:
            if exc.code != "InvalidPermission.Duplicate":
                raise

    async def delete_security_group(self, group_id: str) -> None:
        await self.call("delete_security_group", GroupId=group_id)

    # -- volumes and snapshots (listing; workflows live in ops/) ---------------

    async def volumes(self) -> list[Volume]:
        raw = await self.paginate("describe_volumes", "Volumes")
        return sorted((_volume(v) for v in raw), key=lambda v: (v.name or "~", v.id))

    async def snapshots(self) -> list[Snapshot]:
        raw = await self.paginate("describe_snapshots", "Snapshots", OwnerIds=["self"])
        return sorted((_snapshot(s) for s in raw), key=lambda s: (s.name or "~", s.id))

    # -- images, volumes and snapshots: changes (the workflows are ops/images.py, ops/volumes.py)

    async def create_image(
        self, instance_id: str, name: str, *, no_reboot: bool, tags: dict[str, str]
    ) -> str:
        raw = await self.call(
            "create_image",
            InstanceId=instance_id,
            Name=name,
            Description=f"cloudsh freeze of {instance_id}",
            NoReboot=no_reboot,
            TagSpecifications=[
                {"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        return str(raw["ImageId"])

    async def get_image(self, image_id: str) -> Image | None:
        try:
            raw = await self.call("describe_images", ImageIds=[image_id])
        except NotFound:
            return None
        except AWSError as exc:
            if exc.code.startswith("InvalidAMIID"):
                return None
            raise
        found = raw.get("Images") or []
        return _image(found[0]) if found else None

    async def deregister_image(self, image_id: str) -> None:
        await self.call("deregister_image", ImageId=image_id)

    async def availability_zones(self) -> list[str]:
        raw = await self.call("describe_availability_zones")
        return sorted(z["ZoneName"] for z in raw.get("AvailabilityZones", ()))

    async def create_volume(
        self, *, az: str, size_gb: int, volume_type: str, snapshot_id: str | None, tags: dict[str, str]
    ) -> Volume:
        kwargs: dict[str, Any] = dict(
            AvailabilityZone=az,
            Size=size_gb,
            VolumeType=volume_type,
            Encrypted=True,
            TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        if snapshot_id:
            kwargs["SnapshotId"] = snapshot_id
        return _volume(await self.call("create_volume", **kwargs))

    async def get_volume(self, volume_id: str) -> Volume:
        raw = await self.call("describe_volumes", VolumeIds=[volume_id])
        return _volume(raw["Volumes"][0])

    async def attach_volume(self, volume_id: str, instance_id: str, device: str) -> None:
        await self.call("attach_volume", VolumeId=volume_id, InstanceId=instance_id, Device=device)

    async def detach_volume(self, volume_id: str, instance_id: str) -> None:
        await self.call("detach_volume", VolumeId=volume_id, InstanceId=instance_id)

    async def delete_volume(self, volume_id: str) -> None:
        await self.call("delete_volume", VolumeId=volume_id)

    async def create_snapshot(self, volume_id: str, description: str, tags: dict[str, str]) -> Snapshot:
        raw = await self.call(
            "create_snapshot",
            VolumeId=volume_id,
            Description=description,
            TagSpecifications=[
                {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        return _snapshot(raw)

    async def get_snapshot(self, snapshot_id: str) -> Snapshot:
        raw = await self.call("describe_snapshots", SnapshotIds=[snapshot_id])
        return _snapshot(raw["Snapshots"][0])

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self.call("delete_snapshot", SnapshotId=snapshot_id)


def resolve_name(name: str, instances: Sequence[Instance]) -> Instance:
    """Pick the live instance called `name` (Name tag) or with that id."""
    by_id = [i for i in instances if i.id == name]
    if by_id:
        return by_id[0]
    live = [i for i in instances if i.is_live and i.name == name]
    if len(live) == 1:
        return live[0]
    if len(live) > 1:
        ids = ", ".join(f"{i.id} ({i.state})" for i in live)
        raise Ambiguous(
            f"{len(live)} instances are named {name!r}: {ids}", "use the instance id instead"
        )
    guess = closest(name, [i.name for i in instances if i.name and i.is_live])
    raise NotFound(
        f"no instance named {name!r}",
        f"did you mean {guess}?" if guess else "list them with `cloudsh ls`",
    )


_CREDENTIAL_CODES = {
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "SignatureDoesNotMatch",
}


def credentials_hint(profile: str | None) -> str:
    who = f" --profile {profile}" if profile else ""
    return (
        f"refresh them with `aws sso login{who}` or `aws configure{who}` "
        "(or run on the local sandbox with `cloudsh --sandbox`)"
    )


def translate(exc: ClientError, profile: str | None = None) -> CloudshError:
    """A botocore ClientError -> the CloudshError a user should see."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = str(err.get("Message", "")).rstrip(".") or code
    op = exc.operation_name
    if code in _CREDENTIAL_CODES:
        which = f"profile {profile!r}" if profile else "the default AWS credentials"
        return CredentialsError(
            f"AWS rejected {which} ({code}: {message})", credentials_hint(profile)
        )
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        return AWSError(f"not allowed to call {op}: {message}", "ask for that IAM permission", code)
    if code.startswith("InvalidInstanceID"):
        return NotFound(message, "list instances with `cloudsh ls --all`")
    if code == "IncorrectInstanceState":
        return InvalidState(message, "check its state with `cloudsh ls`")
    if code in ("InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow"):
        return CapacityError(
            f"AWS has no capacity for this right now ({message})",
            "try another type or availability zone, or on-demand instead of spot",
            code,
        )
    if code in ("VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"):
        return AWSError(
            f"over your account's quota: {message}",
            "request a higher vCPU quota in the Service Quotas console",
            code,
        )
    if code in ("Unsupported", "InvalidParameterValue", "InvalidParameterCombination"):
        return AWSError(f"{op} refused: {message}", "", code)
    return AWSError(f"{op} failed: {code}: {message}", "", code)


def translate_botocore(exc: BotoCoreError, target: Any) -> CloudshError:
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
        which = f"profile {target.profile!r}" if target.profile else "any AWS credentials"
        return CredentialsError(f"could not find {which}: {exc}", credentials_hint(target.profile))
    if name in ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError"):
        return CredentialsError(f"the SSO session has expired ({exc})", credentials_hint(target.profile))
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        if target.sandbox:
            return CloudshError(
                f"cannot reach the sandbox cloud at {target.endpoint_url}",
                "start it with `cloudsh sandbox up`",
            )
        return CloudshError(f"cannot reach AWS: {exc}", "check your network connection")
    return CloudshError(f"AWS request failed: {exc}", "")
