"""The sandbox's remembered look-ups in moto's serializer answer byte for byte what moto
answers without them, on one cloud with every kind of resource cloudsh lists."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import pytest

from cloudsh.sandbox import fastser

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("describe_instances", {}),
    ("describe_instances", {"Filters": [{"Name": "tag:Name", "Values": ["box-1"]}]}),
    ("describe_volumes", {}),
    ("describe_snapshots", {"OwnerIds": ["self"]}),
    ("describe_images", {"Owners": ["self"]}),
    ("describe_security_groups", {}),
    ("describe_key_pairs", {}),
    ("describe_subnets", {}),
    ("describe_tags", {}),
    ("describe_network_interfaces", {}),
]


@pytest.fixture
def ec2() -> Iterator[Any]:
    from moto import mock_aws

    saved = dict(os.environ)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        with mock_aws():
            import boto3

            yield boto3.client("ec2", region_name="us-east-1")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cloud(ec2: Any) -> None:
    image = ec2.describe_images()["Images"][0]["ImageId"]
    group = ec2.create_security_group(GroupName="g", Description="d")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "198.51.100.7/32", "Description": "x"}]}])
    ec2.create_key_pair(KeyName="k", TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "a", "Value": "b"}]}])
    for i in range(3):
        tags = [{"Key": "Name", "Value": f"box-{i}"}, {"Key": "Cost", "Value": "1"}][: i + 1]  # not in key order
        ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=2, MaxCount=2, SecurityGroupIds=[group],
                          KeyName="k", TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                      InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}})
    box = ec2.describe_instances()["Reservations"][0]["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[box])
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=5,
                               TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "data"}]}])
    ec2.create_snapshot(VolumeId=volume["VolumeId"], Description="s")
    ec2.create_image(InstanceId=box, Name="frozen")


def _answers(ec2: Any) -> list[str]:
    bodies: list[str] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        # Each answer has its own request id; all else must match.
        bodies.append(re.sub(rb"<requestId>[^<]*</requestId>", b"", response_dict["body"]).decode())

    ec2.meta.events.register("before-parse.ec2.*", keep)
    try:
        for name, kwargs in CALLS:
            getattr(ec2, name)(**kwargs)
    finally:
        ec2.meta.events.unregister("before-parse.ec2.*", keep)
    return bodies


def test_remembered_lookups_answer_as_moto_does(ec2: Any) -> None:
    _cloud(ec2)
    plain = _answers(ec2)
    with fastser.installed():
        remembered = _answers(ec2)
        again = _answers(ec2)  # from the remembered look-ups this time
    assert len(plain) == len(CALLS)
    assert all("<Errors>" not in body for body in plain)
    for (name, _), a, b, c in zip(CALLS, plain, remembered, again, strict=True):
        assert a == b == c, name
    assert "198.51.100.7/32" in plain[CALLS.index(("describe_security_groups", {}))]
    assert plain[0].count("<instanceId>") == 7


def test_install_is_undone() -> None:
    from moto.core import serialize
    from moto.ec2.models.core import TaggedEC2Resource

    before = (serialize.XFormedAttributePicker.get_possible_keys, serialize.XFormedAttributePicker.__call__,
              TaggedEC2Resource.get_tags)
    with fastser.installed():
        assert serialize.XFormedAttributePicker.get_possible_keys is not before[0]
        assert TaggedEC2Resource.get_tags is not before[2]
    after = (serialize.XFormedAttributePicker.get_possible_keys, serialize.XFormedAttributePicker.__call__,
             TaggedEC2Resource.get_tags)
    assert after == before
