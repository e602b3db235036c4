"""Images as EC2 registers them: a root device name and a root snapshot of a real size.

moto gives every image a 15 GB root snapshot on `/dev/sda1`, whatever it was made from,
and launches a box with exactly the block device mappings the request names (none: one
8 GB volume on `/dev/sda1`). EC2 does otherwise, and a launch that works on moto can
fail on EC2 (or the other way round), so the sandbox plays EC2:

- an image's root snapshot has the size of the volume it was taken from: `CreateImage`
  snapshots the box's root volume, on the box's root device name ("Create an
  Amazon EBS-backed AMI", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/creating-an-ami-ebs.html);
  the Ubuntu images the sandbox publishes have Canonical's 8 GB root, the Deep Learning
  Base OSS NVIDIA Driver GPU AMIs a 75 GB one;
- `RunInstances` starts from the image's own mappings. A request mapping on the image's
  root device may grow the root, never shrink it below the snapshot
  (`InvalidBlockDeviceMapping`, "Volume of size 50GB is smaller than snapshot 'snap-…',
  expect size >= 100GB"); a mapping on any other device name adds an empty volume beside
  the root ("Block device mappings for volumes on Amazon EC2 instances",
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/block-device-mapping-concepts.html,
  and RunInstances' BlockDeviceMapping, "Amazon EC2 API Reference: BlockDeviceMapping");
- `DescribeImages` reports each image's real root size (moto answers 15 for all).
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from cloudsh.sandbox.wsgi import Ec2Error

#: Canonical's Ubuntu server images have an 8 GiB root snapshot (DescribeImages on any
#: `ubuntu/images/hvm-ssd*/ubuntu-*-server-*` image in any region).
PUBLISHED_ROOT_GB = 8
#: What the root of a published image is, as Canonical registers it.
PUBLISHED_ROOT_TYPE = "gp3"
#: The Deep Learning Base OSS NVIDIA Driver GPU AMI's root snapshot (driver, CUDA stacks
#: and Docker on it) is 75 GB: a box of it needs a root disk at least that size.
DLAMI_ROOT_GB = 75
#: Amazon's account, owner of the Deep Learning AMIs (DescribeImages --owners amazon).
DLAMI_OWNER = "898082745236"


def is_dlami(ami: Any) -> bool:
    """Whether the image is a Deep Learning Base OSS NVIDIA Driver GPU AMI (it has the driver)."""
    return ami is not None and ami.owner_id == DLAMI_OWNER and "Nvidia Driver" in (ami.name or "")


_MAPPING = re.compile(r"^BlockDeviceMapping\.(\d+)\.(.+)$")


def root_size_gb(ami: Any) -> int:
    """The size of the image's root snapshot (the volume it was taken from)."""
    return int(ami.ebs_snapshot.volume.size)


def root_volume_type(ami: Any) -> str:
    return str(ami.ebs_snapshot.volume.volume_type or PUBLISHED_ROOT_TYPE)


def publish_sizes(backend: Any, owner_id: str) -> None:
    """Give the images others publish (all but `owner_id`'s) their real root snapshot."""
    for ami in list(backend.amis.values()):
        if ami.owner_id != owner_id:
            ami.ebs_snapshot.volume.size = DLAMI_ROOT_GB if is_dlami(ami) else PUBLISHED_ROOT_GB
            ami.ebs_snapshot.volume.volume_type = PUBLISHED_ROOT_TYPE


def after_create_image(backend: Any, ami_id: str, instance_id: str) -> None:
    """Make the new image's root snapshot one of the box's root volume, on its device name."""
    ami = backend.amis.get(ami_id)
    inst = next((i for i in backend.all_instances() if i.id == instance_id), None)
    if ami is None or inst is None:
        return
    root = inst.block_device_mapping.get(inst.root_device_name)
    if root is None:
        return
    placeholder = ami.ebs_snapshot
    ami.ebs_snapshot = backend.create_snapshot(
        root.volume_id, placeholder.description, ami.owner_id, from_ami=ami_id
    )
    # moto's own placeholder (a 15 GB volume that never existed) goes; it refuses to
    # delete a snapshot an image uses, so it is dropped from its table directly.
    backend.snapshots.pop(placeholder.id, None)
    ami.root_device_name = inst.root_device_name


def run_instances_params(backend: Any, params: dict[str, str]) -> dict[str, str] | None:
    """The RunInstances request with the image's root mapping merged in, as EC2 merges it;
    None if the image is unknown (moto answers that). Raises `InvalidBlockDeviceMapping`
    for a root smaller than the image's snapshot."""
    ami = backend.amis.get(params.get("ImageId", ""))
    if ami is None:
        return None
    mappings: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        found = _MAPPING.match(key)
        if found:
            mappings.setdefault(int(found.group(1)), {})[found.group(2)] = value
    snapshot, size = ami.ebs_snapshot, root_size_gb(ami)
    root = next((m for m in mappings.values() if m.get("DeviceName") == ami.root_device_name), None)
    if root is None:
        root = {
            "DeviceName": ami.root_device_name,
            "Ebs.DeleteOnTermination": "true",
            "Ebs.VolumeType": root_volume_type(ami),
        }
        mappings[max(mappings, default=0) + 1] = root
    asked = root.get("Ebs.VolumeSize")
    if asked is not None and int(asked) < size:
        # EC2's wording, double space included, as RunInstances errors quote it (e.g.
        # github.com/scylladb/scylladb/issues/6999, openshift/origin-ci-tool/issues/153).
        raise Ec2Error(
            "InvalidBlockDeviceMapping",
            f"Volume of size {int(asked)}GB is smaller than  snapshot '{snapshot.id}', expect size >= {size}GB",
        )
    root.setdefault("Ebs.VolumeSize", str(size))
    root.setdefault("Ebs.SnapshotId", snapshot.id)
    out = {k: v for k, v in params.items() if not _MAPPING.match(k)}
    for n, mapping in enumerate(mappings.values(), 1):
        out.update({f"BlockDeviceMapping.{n}.{k}": v for k, v in mapping.items()})
    return out


def describe_images_body(backend: Any, body: bytes) -> bytes:
    """moto's DescribeImages answer with each image's real root snapshot size."""
    root = ElementTree.fromstring(body)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if ns:
        ElementTree.register_namespace("", ns[1:-1])
    for images in root.iter(f"{ns}imagesSet"):
        for image in images:
            ami = backend.amis.get(image.findtext(f"{ns}imageId") or "")
            for mapping in image.iterfind(f"{ns}blockDeviceMapping/{ns}item"):
                ebs = mapping.find(f"{ns}ebs")
                if ami is None or ebs is None or mapping.findtext(f"{ns}deviceName") != ami.root_device_name:
                    continue
                for tag, value in (
                    ("volumeSize", str(root_size_gb(ami))),
                    ("deleteOnTermination", "true"),
                    ("volumeType", root_volume_type(ami)),
                ):
                    el = ebs.find(f"{ns}{tag}")
                    if el is None:
                        el = ElementTree.SubElement(ebs, f"{ns}{tag}")
                    el.text = value
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))
