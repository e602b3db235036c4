"""Capacity per instance type and AZ: `cloudsh sandbox capacity`, enforced as EC2 does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import pytest

from cloudsh.sandbox.capacity import CapacityLedger
from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

TYPE = "c5.large"  # no other test launches it


@pytest.fixture
def limited(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session sandbox; every capacity this test sets is unlimited again afterwards."""
    yield sandbox
    for az in ("us-east-1a", "us-east-1b"):
        ok("sandbox", "capacity", TYPE, az, "-1")


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
    assert "1 more may start" in ok("sandbox", "capacity", TYPE, "us-east-1b", "1")

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
    ec2.stop_instances(InstanceIds=[made["InstanceId"]])
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ec2.start_instances(InstanceIds=[made["InstanceId"]])
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    ok("sandbox", "capacity", TYPE, "us-east-1b", "-1")
    ec2.start_instances(InstanceIds=[made["InstanceId"]])
    ec2.terminate_instances(InstanceIds=[made["InstanceId"]])


def test_bad_capacity_arguments_get_one_line(sandbox: Sandbox) -> None:
    assert "not an Availability Zone" in one_line_error(cloudsh("sandbox", "capacity", TYPE, "us-east-9z", "1"))
    assert "not an EC2 instance type" in one_line_error(cloudsh("sandbox", "capacity", "c5.huge", "us-east-1a", "1"))
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
