"""The sandbox is a cloud, not a process: it survives `sandbox down`/`up` and a daemon
killed with SIGKILL (boxes come back stopped with their trees, tags and volumes, and
nothing of the old daemon runs on), says once when it could not restore its cloud, and
serves other regions than us-east-1. Through the real `cloudsh` binary where a user
would use it; boto3 plays a script acting on the same account."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloudsh.sandbox.control import sandbox_down, sandbox_env
from cloudsh.sandbox.persist import CLOUD_FILE, PROCS_DIR
from tests.cli import by_name, cloudsh, ok
from tests.sandbox_fixture import Sandbox, own_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of this module's own, since its tests stop and kill it. Without
    bubblewrap, whose box dies with the daemon that started it, a session's processes
    outlive a killed daemon unless the next start ends them."""
    with own_sandbox(tmp_path_factory.mktemp("persist"), CLOUDSH_SANDBOX_ISOLATION="none") as sb:
        yield sb


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _ssh(sb: Sandbox, iid: str, command: str) -> str:
    async def run() -> str:
        async with await sb.connect(sb.box(iid)) as conn:
            return str((await conn.run(command, check=True)).stdout)

    return asyncio.run(run())


def _start_again(sb: Sandbox, iid: str) -> str:
    """After the sandbox came back (`ls` starts it if need be), the box is listed stopped;
    started again, it has its tree."""
    row = by_name("keeper")
    assert row is not None and row["state"] == "stopped", row
    sb.ec2().start_instances(InstanceIds=[iid])
    return _ssh(sb, iid, "cat ~/kept.txt")


def test_the_cloud_survives_down_up_and_a_killed_daemon(own: Sandbox) -> None:
    sb, ec2 = own, own.ec2()
    box = sb.launch("t3.micro", tags={"Name": "keeper", "team": "ml"})
    az = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    vol = ec2.create_volume(AvailabilityZone=az, Size=2)["VolumeId"]
    sb.past_window(time.monotonic())
    ec2.attach_volume(VolumeId=vol, InstanceId=box.id, Device="/dev/sdf")
    _ssh(sb, box.id, "echo kept > ~/kept.txt")

    # The account's limits and this machine's address are kept too.
    ok("sandbox", "capacity", "t3.large", az, "0")
    ok("sandbox", "quota", "L-DB2E81BA", "0")
    ok("sandbox", "address", "198.51.100.9")

    ok("sandbox", "down")
    assert _start_again(sb, box.id) == "kept\n"
    assert "198.51.100.9" in ok("sandbox", "address")
    image = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]["ImageId"]
    for kind, where, code in (("t3.large", {"Placement": {"AvailabilityZone": az}}, "InsufficientInstanceCapacity"),
                              ("g5.xlarge", {}, "VcpuLimitExceeded")):
        with pytest.raises(ec2.exceptions.ClientError) as refused:
            ec2.run_instances(ImageId=image, InstanceType=kind, MinCount=1, MaxCount=1, **where)
        assert refused.value.response["Error"]["Code"] == code, (kind, refused.value.response)
    ok("sandbox", "capacity", "t3.large", az, "-1")
    ok("sandbox", "quota", "L-DB2E81BA", "8")
    ok("sandbox", "address", "127.0.0.1")
    inst = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]
    assert {t["Key"]: t["Value"] for t in inst["Tags"]} == {"Name": "keeper", "team": "ml"}
    attached = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Attachments"]
    assert [a["InstanceId"] for a in attached] == [box.id]
    assert sb.read().instances[box.id].host_key == box.host_key  # the same machine

    # A session left running, then the daemon killed outright.
    async def hold() -> None:
        conn = await sb.connect(sb.box(box.id))
        await conn.create_process("sleep 600")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(hold())
    deadline = time.monotonic() + 10
    procs = sb.dir / PROCS_DIR
    assert sb.read().isolation == "none"
    while not list(procs.glob("*")):
        assert time.monotonic() < deadline, list(procs.glob("*"))
        time.sleep(0.05)
    pids = [int(p.name) for p in procs.glob("*")]
    daemon = sb.read().pid
    os.kill(daemon, signal.SIGKILL)
    loop.close()
    ok("sandbox", "up")
    assert not [p for p in pids if _alive(p)], "box processes outlived their daemon"
    assert _start_again(sb, box.id) == "kept\n"


def test_a_cloud_that_cannot_be_restored_is_said_once(own: Sandbox) -> None:
    sandbox_down(own.settings)
    (own.dir / CLOUD_FILE).write_bytes(b"not a cloud")
    first, second = cloudsh("ls"), cloudsh("ls")
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    said = [line for line in first.stderr.splitlines() if "could not restore" in line]
    assert len(said) == 1, first.stderr
    assert said[0].startswith("the sandbox could not restore its cloud: ") and "it started empty" in said[0]
    kept = Path(said[0].rsplit(" at ", 1)[1])
    assert (kept / CLOUD_FILE).read_bytes() == b"not a cloud"
    assert "could not restore" not in second.stderr
    assert by_name("keeper") is None


def test_a_box_in_another_region_boots_and_answers(own: Sandbox) -> None:
    out = ok("--region", "eu-west-1", "launch", "dublin", "--type", "t3.micro")
    assert "dublin" in out
    row = by_name("dublin", "--region", "eu-west-1")
    assert row is not None and row["state"] == "running", row
    r = cloudsh("--region", "eu-west-1", "run", "dublin", "--", "echo", "hello from dublin")
    assert r.returncode == 0 and "hello from dublin" in r.stdout, r.stderr
    # The box is eu-west-1's alone, in one of its zones.
    env = sandbox_env(own.read())

    def ec2(region: str) -> Any:
        return boto3.client(
            "ec2", region_name=region, endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    east = ec2("us-east-1").describe_instances(Filters=[{"Name": "tag:Name", "Values": ["dublin"]}])
    assert east["Reservations"] == []
    west = ec2("eu-west-1")
    inst = west.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["dublin"]}])["Reservations"][0]["Instances"][0]
    assert inst["Placement"]["AvailabilityZone"].startswith("eu-west-1")
    west.terminate_instances(InstanceIds=[inst["InstanceId"]])
    # The account has the regions every account has, and has opted in to no other.
    served = {r["RegionName"] for r in west.describe_regions()["Regions"]}
    assert {"us-east-1", "eu-west-1"} <= served and "af-south-1" not in served
    optin = {r["RegionName"]: r["OptInStatus"] for r in west.describe_regions(AllRegions=True)["Regions"]}
    assert optin["af-south-1"] == "not-opted-in" and optin["eu-west-1"] == "opt-in-not-required"
