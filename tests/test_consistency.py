"""Eventual consistency: the sandbox plays it as EC2 does, and cloudsh rides through it.

"Eventual consistency in the Amazon EC2 API"
(https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from cloudsh.config import Settings
from cloudsh.errors import CloudshError
from cloudsh.ops import instances as ops
from tests.cli import cloudsh, ok
from tests.faults import DroppingProxy, ec2_error
from tests.sandbox_fixture import Sandbox, own_sandbox
from tests.test_faults import backend_via

pytestmark = pytest.mark.sandbox

#: The separate sandbox's window: long enough that every step after a create meets it.
SLOW_S = 2.0


def _code(call: object) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        call()  # type: ignore[operator]
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_a_new_resource_is_not_found_by_id_until_the_window_passes(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    window = Settings.load().sandbox_consistency_s
    assert window > 0  # the session's sandbox plays it, so every test meets it
    iid = ec2.run_instances(
        ImageId=sandbox.ubuntu_image(), InstanceType="t3.micro", MinCount=1, MaxCount=1
    )["Instances"][0]["InstanceId"]
    group = ec2.create_security_group(GroupName=f"ec-{uuid.uuid4().hex[:6]}", Description="ec")["GroupId"]
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    created = time.monotonic()
    try:
        assert _code(lambda: ec2.describe_instances(InstanceIds=[iid])) == ("InvalidInstanceID.NotFound", 400)
        assert _code(lambda: ec2.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "v"}]))[0] == "InvalidInstanceID.NotFound"
        assert _code(lambda: ec2.describe_security_groups(GroupIds=[group]))[0] == "InvalidGroup.NotFound"
        assert _code(lambda: ec2.describe_volumes(VolumeIds=[vol]))[0] == "InvalidVolume.NotFound"
        # A listing that names nothing, and filters, answer as usual.
        listed = ec2.describe_instances(Filters=[{"Name": "instance-id", "Values": [iid]}])["Reservations"]
        assert [i["InstanceId"] for r in listed for i in r["Instances"]] == [iid]
        assert time.monotonic() - created < window  # all of the above inside the window

        time.sleep(max(0.0, created + window - time.monotonic()) + 0.05)
        found = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        assert found[0]["Instances"][0]["InstanceId"] == iid
        assert ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["GroupId"] == group
        assert ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["VolumeId"] == vol
    finally:
        time.sleep(max(0.0, created + window - time.monotonic()))
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.delete_volume(VolumeId=vol)
        ec2.delete_security_group(GroupId=group)


async def test_a_box_unknown_past_the_bound_is_named_as_billing(sandbox: Sandbox) -> None:
    """EC2 keeps answering NotFound for the new box for longer than cloudsh waits: the
    launch fails, and its error names the box that bills and how to end it."""
    upstream = sandbox.env["AWS_ENDPOINT_URL"]

    def unknown(request: bytes) -> bytes | None:
        if b"Action=DescribeInstances" in request and b"InstanceId.1=" in request:
            iid = request.split(b"InstanceId.1=")[1].split(b"&")[0].decode()
            return ec2_error("InvalidInstanceID.NotFound", f"The instance ID '{iid}' does not exist")
        return None

    settings = dataclasses.replace(Settings.load(), consistency_wait_s=1.5)
    direct = backend_via(upstream, settings)
    proxy = DroppingProxy(upstream, fail=unknown)
    try:
        b = backend_via(proxy.url, settings)
        plan = await ops.plan_launch(b, f"lost-{uuid.uuid4().hex[:6]}", instance_type="t3.micro")
        said: list[str] = []
        started = time.monotonic()
        with pytest.raises(CloudshError) as err:
            await ops.launch(b, plan, progress=said.append)
        assert 1.0 < time.monotonic() - started < 30  # retried for about the bound, then gave up
        [inst] = [i for i in await direct.ec2.list_instances() if i.name == plan.name]
        await direct.ec2.terminate([inst.id])
        message = str(err.value)
        assert inst.id in message and "billing" in message and f"cloudsh terminate {inst.id}" in message
        assert any(inst.id in line and "launched" in line for line in said)  # said before waiting
        describes = [r for r in proxy.requests if b"Action=DescribeInstances" in r and inst.id.encode() in r]
        assert len(describes) > 2  # it did retry
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of its own, where a new resource stays unknown for `SLOW_S`; the real
    `cloudsh` (tests/cli.py) finds it through CLOUDSH_SANDBOX_DIR while this module runs."""
    with own_sandbox(tmp_path_factory.mktemp("slow-cloud"), CLOUDSH_SANDBOX_CONSISTENCY_S=str(SLOW_S)) as sb:
        yield sb


def test_cloudsh_rides_through_a_long_window(slow: Sandbox) -> None:
    # The window is played here too (this is what the commands below must survive).
    gid = slow.ec2().create_security_group(GroupName="probe", Description="probe")["GroupId"]
    assert _code(lambda: slow.ec2().describe_security_groups(GroupIds=[gid]))[0] == "InvalidGroup.NotFound"

    name, vol, snap, image = "ec-box", "ec-vol", "ec-snap", "ec-img"
    out = cloudsh("launch", name, "--type", "t3.micro")  # new key pair, group and box
    assert out.returncode == 0, out.stderr
    box = json.loads(ok("ls", "--json"))[0]
    # The id (and its price) is said as soon as EC2 returns it, before any waiting.
    first = next(line for line in out.stderr.splitlines() if box["id"] in line)
    assert "launched" in first and "$" in first and "bills" in first
    try:
        ok("volume", "create", vol, "2", "--for", name)
        ok("volume", "attach", vol, name, "--format", "--mount", "/mnt/ec")
        ok("run", name, "--", "echo kept > /mnt/ec/f.txt")
        ok("snapshot", vol, snap)
        assert any(s["name"] == snap and s["state"] == "completed" for s in json.loads(ok("snapshots", "--json")))
        ok("freeze", name, image, "--yes")
        [rec] = [i for i in json.loads(ok("images", "--json")) if i["name"] == image]
        assert rec["state"] == "available"
        # The image holds no link to the live volume: its mount point is an empty directory.
        mount = slow.dir / "images" / rec["id"] / "root" / "mnt" / "ec"
        assert mount.is_dir() and not mount.is_symlink() and not any(mount.iterdir())
    finally:
        cloudsh("terminate", name, "--yes")
