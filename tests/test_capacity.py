"""Capacity per instance type and AZ: `cloudsh sandbox capacity`, enforced as EC2 does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from cloudsh.sandbox.capacity import CapacityLedger
from cloudsh.sandbox.control import sandbox_request
from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

TYPE = "c5.large"  # no other test launches it


def _set(sandbox: Sandbox, what: str, **doc: object) -> None:
    """What `cloudsh sandbox capacity|quota` asks the daemon, asked in-process (quicker)."""
    sandbox_request(sandbox.settings, f"/_sandbox/{what}", doc)


@pytest.fixture
def limited(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session sandbox; every capacity this test sets is unlimited again afterwards."""
    yield sandbox
    for az in ("us-east-1a", "us-east-1b"):
        _set(sandbox, "capacity", instance_type=TYPE, az=az, count=-1)


@pytest.fixture
def no_gpu_quota(sandbox: Sandbox) -> Iterator[Sandbox]:
    """On-demand G and VT quota 0, as on a new account; the session's value afterwards."""
    assert "0 vCPUs" in ok("sandbox", "quota", "L-DB2E81BA", "0")
    yield sandbox
    _set(sandbox, "quota", code="L-DB2E81BA", value=256)  # tests/conftest.py


def _ec2(sandbox: Sandbox) -> Any:
    """A client that shows each answer as it comes (no retries of 500s)."""
    env = sandbox.env
    return boto3.client(
        "ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )


def test_capacity_is_enforced_per_type_and_az(limited: Sandbox) -> None:
    ec2 = _ec2(limited)
    run = {"ImageId": limited.ubuntu_image(), "InstanceType": TYPE, "KeyName": limited.key_name,
           "MinCount": 1, "MaxCount": 1}
    assert "c5.large in us-east-1a: 0 more may start" in ok("sandbox", "capacity", TYPE, "us-east-1a", "0")
    _set(limited, "capacity", instance_type=TYPE, az="us-east-1b", count=1)

    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(**run, Placement={"AvailabilityZone": "us-east-1a"})
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500  # a server error, as on EC2
    assert "(us-east-1a)" in err.value.response["Error"]["Message"]

    # No AZ asked for: EC2 places it where there is capacity. That took the last one in 1b.
    made = ec2.run_instances(**run)["Instances"][0]
    made_at = time.monotonic()
    assert made["Placement"]["AvailabilityZone"] == "us-east-1b"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.run_instances(**run, Placement={"AvailabilityZone": "us-east-1b"})
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"

    # Starting a stopped box needs capacity too.
    limited.past_window(made_at)
    limited.stop(made["InstanceId"])
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.start_instances(InstanceIds=[made["InstanceId"]])
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    _set(limited, "capacity", instance_type=TYPE, az="us-east-1b", count=-1)
    ec2.start_instances(InstanceIds=[made["InstanceId"]])
    ec2.terminate_instances(InstanceIds=[made["InstanceId"]])


def test_bad_capacity_arguments_get_one_line(sandbox: Sandbox) -> None:
    assert "not an Availability Zone" in one_line_error(cloudsh("sandbox", "capacity", TYPE, "us-east-9z", "1"))
    r = cloudsh("sandbox", "capacity", TYPE, "us-east-1a", "-5")
    assert r.returncode == 2 and "unlimited" in r.stderr


def test_listeners_hear_of_raised_capacity_only() -> None:
    ledger = CapacityLedger()
    heard: list[tuple[str, str, int | None]] = []
    unsubscribe = ledger.subscribe(lambda t, az, n: heard.append((t, az, n)))
    ledger.set(TYPE, "us-east-1a", 0)  # lowered from unlimited: nothing to restart
    assert ledger.take({(TYPE, "us-east-1a"): 1}) == (TYPE, "us-east-1a")
    ledger.set(TYPE, "us-east-1a", 2)
    assert ledger.take({(TYPE, "us-east-1a"): 1}) is None
    assert ledger.left(TYPE, "us-east-1a") == 1
    ledger.set(TYPE, "us-east-1a", -1)
    unsubscribe()
    ledger.set(TYPE, "us-east-1a", 0)
    ledger.set(TYPE, "us-east-1a", 5)
    assert heard == [(TYPE, "us-east-1a", 2), (TYPE, "us-east-1a", None)]


def test_launch_moves_to_another_az_when_one_has_no_capacity(limited: Sandbox) -> None:
    name = f"cap-{uuid.uuid4().hex[:6]}"
    _set(limited, "capacity", instance_type=TYPE, az="us-east-1a", count=0)
    r = cloudsh("launch", name, "--type", TYPE, "--no-wait")
    assert r.returncode == 0, r.stderr
    assert f"no {TYPE} capacity in us-east-1a right now; trying us-east-1b" in r.stderr
    iid = r.stdout.split()[1]
    limited.past_window(time.monotonic())
    ec2 = limited.ec2()
    placed = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["Placement"]
    ec2.terminate_instances(InstanceIds=[iid])
    assert placed["AvailabilityZone"] == "us-east-1b"

    # Pinned to that AZ: the capacity line, nothing about quotas, no box.
    r = cloudsh("launch", name + "a", "--type", TYPE, "--az", "us-east-1a", "--no-wait")
    line = r.stderr.splitlines()[-1]  # after the "launching ..." progress line
    assert r.returncode == 1 and f"no {TYPE} on-demand capacity in us-east-1a" in line and "quota" not in line
    assert "Traceback" not in r.stderr
    named = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name + "a"]}])["Reservations"]
    assert named == []


def test_over_the_vcpu_quota_nothing_is_made(no_gpu_quota: Sandbox) -> None:
    """cloudsh refuses before creating anything, naming the quota and how to ask for more;
    past that pre-flight (another client, a race) EC2 itself refuses: VcpuLimitExceeded."""
    name = f"quo-{uuid.uuid4().hex[:6]}"
    r = cloudsh("launch", name, "--type", "g5.xlarge", "--no-wait")
    line = one_line_error(r)
    assert r.returncode == 2
    assert "Running On-Demand G and VT instances: 0 vCPUs, this g5.xlarge needs 4" in line
    assert "servicequotas/home/services/ec2/quotas/L-DB2E81BA" in line
    assert "request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 4" in line
    assert "capacity" not in line

    with pytest.raises(botocore.exceptions.ClientError) as err:
        _ec2(no_gpu_quota).run_instances(ImageId=no_gpu_quota.ubuntu_image(), InstanceType="g5.xlarge",
                                         KeyName=no_gpu_quota.key_name, MinCount=1, MaxCount=1)
    assert err.value.response["Error"]["Code"] == "VcpuLimitExceeded"
    assert "current vCPU limit of 0" in err.value.response["Error"]["Message"]
    named = no_gpu_quota.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
    assert named == []


def test_spot_launch_tries_the_cheapest_az_first(limited: Sandbox) -> None:
    ec2 = limited.ec2()
    history = ec2.describe_spot_price_history(InstanceTypes=[TYPE], ProductDescriptions=["Linux/UNIX"])
    offered = {o["Location"] for o in ec2.describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [TYPE]}])["InstanceTypeOfferings"]}
    latest: dict[str, float] = {}
    for p in sorted(history["SpotPriceHistory"], key=lambda p: p["Timestamp"]):
        latest[p["AvailabilityZone"]] = float(p["SpotPrice"])
    cheapest, second = sorted((z for z in latest if z in offered), key=latest.__getitem__)[:2]
    _set(limited, "capacity", instance_type=TYPE, az=cheapest, count=0)
    try:
        r = cloudsh("launch", f"spot-{uuid.uuid4().hex[:6]}", "--type", TYPE, "--spot", "--no-wait")
    finally:
        _set(limited, "capacity", instance_type=TYPE, az=cheapest, count=-1)
    assert r.returncode == 0, r.stderr
    assert f"no {TYPE} capacity in {cheapest} right now; trying {second}" in r.stderr
    # It bills at the price of the AZ it landed in, not the cheapest AZ's.
    assert f"${latest[second]:.4g}/h); it bills from now" in r.stderr, r.stderr
    limited.past_window(time.monotonic())
    ec2.terminate_instances(InstanceIds=[r.stdout.split()[1]])
