"""The async EC2 service: every EC2 API call cloudsh makes goes through `EC2Service`.

Instances, instance types, key pairs and security groups are here; images, volumes
and snapshots in `ec2_storage.py`; how a call is made and its errors translated in
`ec2_calls.py`. boto3 blocks, so each call runs in a worker thread
(`asyncio.to_thread`) on the shared client (see `aws.ClientFactory`). Only `models`
records leave these modules; botocore errors become `CloudshError`s that say what to do.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import difflib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudsh.errors import (
    Ambiguous,
    AWSError,
    CloudshError,
    InvalidState,
    NotFound,
    UsageError,
)
from cloudsh.models import (
    LIVE_STATES,
    SSH_PORT,
    TAG_MANAGED,
    Instance,
    InstanceType,
    SshRule,
)
from cloudsh.services.aws import ClientFactory
from cloudsh.services.ec2_calls import tags_of
from cloudsh.services.ec2_storage import EC2Storage


def _managed(resource_type: str) -> dict[str, Any]:
    """The tag that marks a resource cloudsh made (`orphans` lists only those key pairs and groups)."""
    return {"ResourceType": resource_type, "Tags": [{"Key": TAG_MANAGED, "Value": "1"}]}


@dataclass(frozen=True)
class LaunchSpec:
    """Everything RunInstances needs for one cloudsh box.

    `root_device` must be the image's own root device name: EC2 sizes the root volume
    only through a mapping on that name, and a mapping on any other name adds an empty
    volume beside the root instead ("Block device mappings for volumes on Amazon EC2
    instances", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/block-device-mapping-concepts.html).
    """

    name: str
    instance_type: str
    image_id: str
    key_name: str
    security_group_id: str
    disk_gb: int
    root_device: str
    spot: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    #: Where: an AZ (EC2 picks the default VPC's subnet there), or a subnet.
    az: str | None = None
    subnet_id: str | None = None
    #: Ask for a public IPv4 address in a subnet that does not give one by default.
    public_ip: bool = False
    client_token: str = field(default_factory=lambda: uuid.uuid4().hex)


def _instance(raw: dict[str, Any]) -> Instance:
    """The record of one instance in EC2's answer. It reads only `aws.INSTANCE_MEMBERS`: the
    parser skips the rest, so a member read here must be added there too."""
    tags = tags_of(raw.get("Tags"))
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
        security_groups=tuple(g["GroupId"] for g in raw.get("SecurityGroups", ()) if g.get("GroupId")),
        volume_ids=tuple(
            m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", ()) if "Ebs" in m
        ),
        deleted_on_termination=tuple(
            m["Ebs"]["VolumeId"]
            for m in raw.get("BlockDeviceMappings", ())
            if m.get("Ebs", {}).get("DeleteOnTermination")
        ),
        root_volume=next(
            (m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", ())
             if "Ebs" in m and m.get("DeviceName") == raw.get("RootDeviceName")),
            None,
        ),
        tags=tags,
        state_reason=(raw.get("StateReason") or {}).get("Code", ""),
        state_since=_transition_time(raw.get("StateTransitionReason") or ""),
    )


def _transition_time(reason: str) -> datetime | None:
    """The time in EC2's StateTransitionReason, e.g. "User initiated (2024-05-01 10:00:00 GMT)"."""
    found = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)", reason)
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if found else None


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


def closest(word: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


class EC2Service(EC2Storage):
    """Async EC2 operations for one account and region: instances, instance types, key
    pairs and security groups here, storage in `EC2Storage`, the plumbing in `EC2Calls`."""

    def __init__(
        self, clients: ClientFactory, *, cache_dir: Path | None = None, settle_s: float = 60.0,
        region: str | None = None,
    ) -> None:
        super().__init__(clients, settle_s=settle_s, region=region)
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
            kwargs["MaxResults"] = 1000
        reservations = self._paginate_sync("describe_instances", "Reservations", **kwargs)
        found = [_instance(i) for r in reservations for i in r.get("Instances", ())]
        for inst in found:
            self.seen(inst.id, inst.launch_time)
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

    async def start(self, ids: Sequence[str]) -> dict[str, str]:
        """Start the instances; their states as EC2 answered (e.g. `pending`), by id."""
        answer = await self.call("start_instances", InstanceIds=list(ids))
        return _current_states(answer.get("StartingInstances", []))

    async def stop(self, ids: Sequence[str]) -> dict[str, str]:
        """Stop the instances; their states as EC2 answered (e.g. `stopping`), by id."""
        answer = await self.call("stop_instances", InstanceIds=list(ids))
        return _current_states(answer.get("StoppingInstances", []))

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

    async def delete_tags(self, resource_ids: Sequence[str], keys: Sequence[str]) -> None:
        await self.call("delete_tags", Resources=list(resource_ids), Tags=[{"Key": k} for k in keys])

    async def wait_state(
        self,
        ids: Sequence[str],
        states: Iterable[str],
        *,
        timeout: float = 600.0,
        interval: float = 0.25,
        max_interval: float = 2.0,
        or_else: Callable[[Instance], bool] | None = None,
    ) -> list[Instance]:
        """Poll until every instance is in one of `states` (or `or_else` says it is done).

        boto3's waiters poll every 15 s; a box that is ready in 3 s should not make
        the user wait 15, so this polls fast at first and backs off gently.
        """
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while True:
            found = await self.list_instances(ids=ids)
            if found and all(i.state in wanted or (or_else is not None and or_else(i)) for i in found):
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
        if spec.public_ip and spec.subnet_id:
            # The address is asked for on the network interface, which then holds the group.
            kwargs["NetworkInterfaces"] = [{
                "DeviceIndex": 0, "SubnetId": spec.subnet_id, "Groups": [spec.security_group_id],
                "AssociatePublicIpAddress": True,
            }]
        else:
            kwargs["SecurityGroupIds"] = [spec.security_group_id]
            if spec.subnet_id:
                kwargs["SubnetId"] = spec.subnet_id
        if spec.az and not spec.subnet_id:
            kwargs["Placement"] = {"AvailabilityZone": spec.az}
        if spec.spot:
            kwargs["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "persistent",
                    "InstanceInterruptionBehavior": "stop",
                },
            }
        raw = await self.call("run_instances", **kwargs)
        inst = _instance(raw["Instances"][0])
        self.created(inst.id, *filter(None, [inst.spot_request_id]))
        return inst

    async def console_output(self, instance_id: str) -> str:
        """The instance's console output as text (EC2 sends it base64-encoded)."""
        raw = await self.call("get_console_output", InstanceId=instance_id, Latest=True)
        text = str(raw.get("Output") or "")
        try:
            return base64.b64decode(text, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return text  # not base64: some endpoints send plain text

    async def send_ssh_public_key(self, instance_id: str, user: str, public_key: str, az: str | None) -> None:
        """EC2 Instance Connect: the box's SSH server accepts `public_key` for 60 s
        (https://docs.aws.amazon.com/ec2-instance-connect/latest/APIReference/API_SendSSHPublicKey.html)."""
        args: dict[str, str] = {"InstanceId": instance_id, "InstanceOSUser": user, "SSHPublicKey": public_key}
        if az:
            args["AvailabilityZone"] = az

        def send() -> Any:
            client = self.clients.client("ec2-instance-connect", self.region)
            return self._translated(lambda: client.send_ssh_public_key(**args), args)

        await asyncio.to_thread(send)

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

    # -- key pairs and security groups -----------------------------------------

    async def key_pair_exists(self, name: str) -> bool:
        raw = await self.call("describe_key_pairs", Filters=[{"Name": "key-name", "Values": [name]}])
        return bool(raw.get("KeyPairs"))

    async def import_key_pair(self, name: str, public_key: str) -> None:
        look_up = self.finder("describe_key_pairs", "KeyPairs", Filters=[{"Name": "key-name", "Values": [name]}])
        await self.create("import_key_pair", look_up, KeyName=name, PublicKeyMaterial=public_key.encode(),
                          TagSpecifications=[_managed("key-pair")])
        self.created(name)

    async def delete_key_pair(self, name: str) -> None:
        await self.call("delete_key_pair", KeyName=name)

    async def find_security_group(self, name: str, vpc_id: str | None = None) -> str | None:
        """The group of that name (in `vpc_id` when given: names are per VPC)."""
        filters = [{"Name": "group-name", "Values": [name]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        raw = await self.call("describe_security_groups", Filters=filters)
        groups = raw.get("SecurityGroups", ())
        return str(groups[0]["GroupId"]) if groups else None

    async def ssh_rules(self, group_ids: Sequence[str]) -> list[SshRule]:
        """The groups' inbound IPv4 rules that let TCP port 22 in (one per address range)."""
        raw = await self.call("describe_security_groups", GroupIds=list(group_ids))
        rules: list[SshRule] = []
        for group in raw.get("SecurityGroups", ()):
            for perm in group.get("IpPermissions", ()):
                proto = str(perm.get("IpProtocol", ""))
                if proto != "-1" and not (
                    proto in ("tcp", "6") and perm.get("FromPort", 0) <= SSH_PORT <= perm.get("ToPort", -1)
                ):
                    continue
                exact = proto in ("tcp", "6") and perm.get("FromPort") == perm.get("ToPort") == SSH_PORT
                rules.extend(
                    SshRule(group["GroupId"], r["CidrIp"], r.get("Description", "") or "", exact)
                    for r in perm.get("IpRanges", ())
                )
        return rules

    async def create_security_group(self, name: str, description: str, vpc_id: str | None = None) -> str:
        """In `vpc_id`, else in the default VPC."""
        extra = {"VpcId": vpc_id} if vpc_id else {}
        in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}] if vpc_id else []
        look_up = self.finder(
            "describe_security_groups", "SecurityGroups", Filters=[{"Name": "group-name", "Values": [name]}, *in_vpc]
        )
        raw = await self.create("create_security_group", look_up, GroupName=name, Description=description,
                                TagSpecifications=[_managed("security-group")], **extra)
        self.created(raw["GroupId"])
        return str(raw["GroupId"])

    async def allow_ssh(self, group_id: str, cidr: str, description: str) -> None:
        try:
            await self.call(
                "authorize_security_group_ingress",
                GroupId=group_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": SSH_PORT,
                        "ToPort": SSH_PORT,
                        "IpRanges": [{"CidrIp": cidr, "Description": description}],
                    }
                ],
            )
        except AWSError as exc:
            if exc.code != "InvalidPermission.Duplicate":
                raise

    async def revoke_ssh(self, group_id: str, cidrs: Sequence[str]) -> None:
        """Remove the TCP 22 rules for these ranges (one already gone is no error)."""
        try:
            await self.call(
                "revoke_security_group_ingress",
                GroupId=group_id,
                IpPermissions=[
                    {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT,
                     "IpRanges": [{"CidrIp": c} for c in cidrs]}
                ],
            )
        except AWSError as exc:
            if exc.code != "InvalidPermission.NotFound":
                raise

    async def delete_security_group(self, group_id: str) -> None:
        await self.call("delete_security_group", GroupId=group_id)

def resolve_name(name: str, instances: Sequence[Instance]) -> Instance:
    """Pick the live instance called `name` (Name tag) or with that id. When a box cloudsh
    did not launch (a colleague's, on a shared account) has the same Name as one of
    cloudsh's, the name means cloudsh's own."""
    by_id = [i for i in instances if i.id == name]
    if by_id:
        return by_id[0]
    live = [i for i in instances if i.is_live and i.name == name]
    if len(live) > 1 and any(i.managed for i in live):
        live = [i for i in live if i.managed]
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


def _current_states(changes: list[dict[str, Any]]) -> dict[str, str]:
    return {c["InstanceId"]: c["CurrentState"]["Name"] for c in changes}
