"""Images as registered: a box launched from an image gets the image's root device and at
least its root snapshot's size, through the real `cloudsh` on the sandbox, and the
sandbox refuses a smaller root the way EC2 does."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli import cloudsh, ls_json, ok, one_line_error
from tests.sandbox_fixture import Sandbox


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _roots() -> dict[str, int]:
    """Box name -> size of the volumes attached to it, from `volumes --json`."""
    found: dict[str, int] = {}
    for v in json.loads(ok("volumes", "--json")):
        if v["attached_to"]:
            found[v["attached_to"]] = found.get(v["attached_to"], 0) + v["size_gb"]
    return found


@pytest.fixture(scope="module")
def big_image(sandbox: Sandbox) -> Iterator[dict[str, Any]]:
    """The `images --json` record of an image frozen from a box launched with `--disk 100`."""
    box, image = _name("big"), _name("bigimg")
    ok("launch", box, "--type", "t3.micro", "--disk", "100")
    try:
        assert _roots()[box] == 100
        ok("freeze", box, image, "--yes")
    finally:
        cloudsh("terminate", box, "--yes")
    rec = next(i for i in json.loads(ok("images", "--json")) if i["name"] == image)
    yield rec
    cloudsh("image", "delete", image, "--yes")


def test_frozen_image_carries_the_box_root(sandbox: Sandbox, big_image: dict[str, Any]) -> None:
    assert (big_image["root_device"], big_image["root_size_gb"], big_image["size_gb"]) == ("/dev/sda1", 100, 100)
    raw = sandbox.ec2().describe_images(ImageIds=[big_image["id"]])["Images"][0]
    [root] = [m for m in raw["BlockDeviceMappings"] if m["DeviceName"] == raw["RootDeviceName"]]
    assert root["Ebs"]["VolumeSize"] == 100
    snap = sandbox.ec2().describe_snapshots(SnapshotIds=[root["Ebs"]["SnapshotId"]])["Snapshots"][0]
    assert snap["VolumeSize"] == 100
    # The published Ubuntu images have Canonical's 8 GB root on /dev/sda1.
    ubuntu = sandbox.ec2().describe_images(ImageIds=[sandbox.ubuntu_image()])["Images"][0]
    assert ubuntu["RootDeviceName"] == "/dev/sda1"
    assert [m["Ebs"]["VolumeSize"] for m in ubuntu["BlockDeviceMappings"]] == [8]


def test_launch_from_image_sizes_the_root_from_it(big_image: dict[str, Any]) -> None:
    plain, bigger, small = _name("thaw"), _name("thaw200"), _name("thaw50")
    try:
        ok("launch", plain, "--image", big_image["name"], "--type", "t3.micro", "--no-wait")
        ok("launch", bigger, "--image", big_image["name"], "--type", "t3.micro", "--disk", "200", "--no-wait")
        roots = _roots()
        assert (roots[plain], roots[bigger]) == (100, 200)
        listed = {i["name"]: i for i in ls_json()}
        assert listed[plain]["state"] in ("pending", "running") and listed[bigger]["state"] in ("pending", "running")

        # Below the image's size: refused before anything is made, with the minimum.
        volumes_before = json.loads(ok("volumes", "--json"))
        r = cloudsh("launch", small, "--image", big_image["name"], "--type", "t3.micro", "--disk", "50")
        line = one_line_error(r)
        assert r.returncode == 2, r.stderr
        assert f"image {big_image['name']} needs a root disk of at least 100 GB" in line and "--disk 100" in line
        assert small not in {i["name"] for i in ls_json("--all")}
        assert json.loads(ok("volumes", "--json")) == volumes_before
    finally:
        cloudsh("terminate", plain, bigger, "--yes")


def test_sandbox_refuses_a_root_smaller_than_the_snapshot(sandbox: Sandbox, big_image: dict[str, Any]) -> None:
    ec2 = sandbox.ec2()
    image_id = big_image["id"]
    snap = big_image["snapshots"][0]
    base = dict(ImageId=image_id, InstanceType="t3.micro", MinCount=1, MaxCount=1, KeyName=sandbox.key_name)
    before = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    with pytest.raises(ClientError) as caught:
        ec2.run_instances(**base, BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50}}])
    err = caught.value.response["Error"]
    assert err["Code"] == "InvalidBlockDeviceMapping"
    assert err["Message"] == f"Volume of size 50GB is smaller than  snapshot '{snap}', expect size >= 100GB"
    after = {i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert after == before

    # A mapping on another device name adds an empty volume; the root keeps the image's size.
    iid = ec2.run_instances(
        **base, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10, "DeleteOnTermination": True}}]
    )["Instances"][0]["InstanceId"]
    sandbox.past_window(time.monotonic())  # EC2 names a new box everywhere only after a moment
    try:
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["RootDeviceName"] == "/dev/sda1"
        devices = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"]}
        sizes = {
            v["VolumeId"]: (v["Size"], v.get("SnapshotId") or "")
            for v in ec2.describe_volumes(VolumeIds=list(devices.values()))["Volumes"]
        }
        assert sizes[devices["/dev/sda1"]] == (100, snap)
        assert sizes[devices["/dev/sdf"]] == (10, "")
    finally:
        ec2.terminate_instances(InstanceIds=[iid])


def test_python_api_refuses_a_root_below_the_image(big_image: dict[str, Any]) -> None:
    from cloudsh.api import Cloud
    from cloudsh.errors import UsageError

    cloud = Cloud(sandbox=True)
    try:
        with pytest.raises(UsageError) as caught:
            cloud.launch(_name("api50"), "t3.micro", disk=50, image=big_image["id"])
        assert "at least 100 GB" in str(caught.value) and "--disk 100" in caught.value.hint
    finally:
        cloud.close()
