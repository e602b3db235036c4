"""A cloud of every kind of resource cloudsh lists, in moto in-process (no sandbox, no SSH):
for checks that compare two ways of answering or parsing the same calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def moto_ec2() -> Iterator[Any]:
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


def fill(ec2: Any) -> None:
    """Boxes (tagged, untagged, spot, stopped), a group rule, a key pair, a volume, a snapshot, an image."""
    image = ec2.describe_images()["Images"][0]["ImageId"]
    group = ec2.create_security_group(GroupName="g", Description='a "quoted" & <marked> one')["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "198.51.100.7/32", "Description": "x"}]}])
    ec2.create_key_pair(KeyName="k", TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "a", "Value": "b"}]}])
    for i in range(3):
        tags = [{"Key": "Name", "Value": f"box-{i}"}, {"Key": "Cost", "Value": "1 & <2> 'x'"}][: i + 1]  # not in key order
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
