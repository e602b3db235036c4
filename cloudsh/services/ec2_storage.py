"""EC2 storage: images, volumes and snapshots (the calls; the workflows are in
`ops/images.py`, `ops/volumes.py`). Only `models` records leave this module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cloudsh.errors import AWSError, NotFound
from cloudsh.models import DLAMI_OWNER, TAG_MANAGED, ElasticIp, Image, Snapshot, Volume
from cloudsh.services.aws import BotoCoreError, ClientError
from cloudsh.services.ec2_calls import EC2Calls, tags_of

#: Canonical's AWS account, owner of the official Ubuntu images.
CANONICAL = "099720109477"
#: A snapshot's tag naming the request that made it (see `create_snapshot`).
REQUEST_TAG = "cloudsh:request"
#: SSM public parameters naming the current Ubuntu LTS image per architecture.
UBUNTU_SSM = "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"
UBUNTU_NAME = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-{arch}-server-*"
_SSM_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
#: GPU types launch from the AWS Deep Learning Base OSS NVIDIA Driver GPU AMI (Ubuntu
#: 24.04), which has the NVIDIA driver; AWS names its current one in an SSM public
#: parameter per architecture ("DLAMI release notes", the AMI's "Query AMI-ID with SSM
#: Parameter" section, https://docs.aws.amazon.com/dlami/latest/devguide/appendix-ami-release-notes.html).
DLAMI_SSM = "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
DLAMI_NAME = {
    "x86_64": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *",
    "arm64": "Deep Learning ARM64 Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) *",
}


def _image(raw: dict[str, Any]) -> Image:
    tags = tags_of(raw.get("Tags"))
    created = raw.get("CreationDate")
    root_device = raw.get("RootDeviceName") or ""
    root: dict[str, Any] = next(
        (m.get("Ebs", {}) for m in raw.get("BlockDeviceMappings", ()) if m.get("DeviceName") == root_device),
        {},
    )
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
        root_device=root_device,
        root_size_gb=int(root.get("VolumeSize") or 0),
    )


def _volume(raw: dict[str, Any]) -> Volume:
    tags = tags_of(raw.get("Tags"))
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
    tags = tags_of(raw.get("Tags"))
    return Snapshot(
        id=raw["SnapshotId"],
        name=tags.get("Name", ""),
        volume_id=raw.get("VolumeId", ""),
        size_gb=int(raw.get("VolumeSize", 0)),
        state=raw.get("State", ""),
        started=raw.get("StartTime"),
        tags=tags,
    )


class EC2Storage(EC2Calls):
    """Images, volumes and snapshots of one account and region."""

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

    async def default_image(self, architecture: str = "x86_64", *, nvidia: bool = False) -> Image:
        """The current Ubuntu LTS, or with `nvidia` the current Deep Learning Base OSS NVIDIA
        Driver GPU AMI (Ubuntu 24.04): the SSM public parameter, else the newest by name."""
        if nvidia and architecture in DLAMI_NAME:
            param, owner, name = DLAMI_SSM.format(arch=architecture), DLAMI_OWNER, DLAMI_NAME[architecture]
            what = "Deep Learning Base OSS NVIDIA Driver GPU AMI (Ubuntu 24.04)"
        else:
            arch = _SSM_ARCH.get(architecture, architecture)
            param, owner, name = UBUNTU_SSM.format(arch=arch), CANONICAL, UBUNTU_NAME.format(arch=arch)
            what = "Ubuntu 24.04 image"
        image_id: str | None = None
        try:
            ssm = await asyncio.to_thread(self.clients.client, "ssm")
            raw = await asyncio.to_thread(ssm.get_parameter, Name=param)
            image_id = raw["Parameter"]["Value"]
        except (ClientError, BotoCoreError, KeyError):
            image_id = None  # not published here (or no SSM access): fall back
        if image_id:
            try:
                return await self.find_image(image_id)
            except NotFound:
                pass
        found = await self.images(
            owners=[owner],
            Filters=[
                {"Name": "name", "Values": [name]},
                {"Name": "architecture", "Values": [architecture]},
                {"Name": "state", "Values": ["available"]},
            ],
        )
        if not found:
            raise NotFound(f"no {what} for {architecture} in {self.region}", "pass one with --image AMI_ID")
        return max(found, key=lambda i: i.created or datetime.min.replace(tzinfo=UTC))

    # -- volumes and snapshots (listing; workflows live in ops/) ---------------

    async def volumes(self) -> list[Volume]:
        raw = await self.paginate("describe_volumes", "Volumes")
        return sorted((_volume(v) for v in raw), key=lambda v: (v.name or "~", v.id))

    async def snapshots(self) -> list[Snapshot]:
        raw = await self.paginate("describe_snapshots", "Snapshots", OwnerIds=["self"])
        return sorted((_snapshot(s) for s in raw), key=lambda s: (s.name or "~", s.id))

    # -- what else bills or lingers: addresses, key pairs, security groups ------

    async def addresses(self) -> list[ElasticIp]:
        raw = await self.call("describe_addresses")
        return [
            ElasticIp(
                str(a.get("AllocationId") or a.get("PublicIp")),
                str(a.get("PublicIp", "")),
                a.get("AssociationId") or None,
                a.get("InstanceId") or None,
                tags_of(a.get("Tags")),
            )
            for a in raw.get("Addresses", ())
        ]

    async def regions(self) -> list[str]:
        """The regions enabled for the account (DescribeRegions without AllRegions)."""
        raw = await self.call("describe_regions")
        return sorted(str(r["RegionName"]) for r in raw.get("Regions", ()))

    async def release_address(self, allocation_id: str) -> None:
        await self.call("release_address", AllocationId=allocation_id)

    async def managed_keys_and_groups(self) -> tuple[list[str], list[str]]:
        """The ids of the key pairs and of the security groups cloudsh made (tagged
        `cloudsh:managed`), in one call."""
        raw = await self.paginate("describe_tags", "Tags", Filters=[
            {"Name": "key", "Values": [TAG_MANAGED]}, {"Name": "resource-type", "Values": ["key-pair", "security-group"]}])
        ids = {kind: sorted(str(t["ResourceId"]) for t in raw if t.get("ResourceType") == kind)
               for kind in ("key-pair", "security-group")}
        return ids["key-pair"], ids["security-group"]

    async def key_pairs(self, ids: Sequence[str]) -> list[tuple[str, datetime | None]]:
        """(name, created) of these key pairs (none of those gone since)."""
        raw = await self.call("describe_key_pairs", Filters=[{"Name": "key-pair-id", "Values": list(ids)}])
        return [(str(k["KeyName"]), k.get("CreateTime")) for k in raw.get("KeyPairs", ())]

    async def security_groups(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(id, name) of these security groups (none of those gone since)."""
        raw = await self.paginate("describe_security_groups", "SecurityGroups",
                                  Filters=[{"Name": "group-id", "Values": list(ids)}])
        return [(str(g["GroupId"]), str(g.get("GroupName", ""))) for g in raw]

    # -- images, volumes and snapshots: changes (the workflows are ops/images.py, ops/volumes.py)

    async def create_image(
        self, instance_id: str, name: str, *, no_reboot: bool, tags: dict[str, str]
    ) -> str:
        # Image names are unique per account and region: the name finds a lost create.
        raw = await self.create(
            "create_image",
            self.finder("describe_images", "Images", Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]),
            InstanceId=instance_id,
            Name=name,
            Description=f"cloudsh freeze of {instance_id}",
            NoReboot=no_reboot,
            TagSpecifications=[
                {"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        self.created(raw["ImageId"])
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
        # CreateVolume is idempotent by ClientToken, which botocore fills in once per call
        # and repeats on its retries: a lost answer does not make a second volume.
        vol = _volume(await self.call("create_volume", **kwargs))
        self.created(vol.id)
        return vol

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
        # No token and no unique name: a tag of this request's own finds a lost create.
        tags = {**tags, REQUEST_TAG: uuid.uuid4().hex}

        raw = await self.create(
            "create_snapshot",
            self.finder(
                "describe_snapshots", "Snapshots",
                OwnerIds=["self"], Filters=[{"Name": f"tag:{REQUEST_TAG}", "Values": [tags[REQUEST_TAG]]}],
            ),
            VolumeId=volume_id,
            Description=description,
            TagSpecifications=[
                {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        self.created(raw["SnapshotId"])
        return _snapshot(raw)

    async def get_snapshot(self, snapshot_id: str) -> Snapshot:
        raw = await self.call("describe_snapshots", SnapshotIds=[snapshot_id])
        return _snapshot(raw["Snapshots"][0])

    async def delete_snapshot(self, snapshot_id: str) -> None:
        await self.call("delete_snapshot", SnapshotId=snapshot_id)
