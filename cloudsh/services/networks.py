"""Where a box can go: the AZs that offer a type, the default VPC, subnets.

An account may have no default VPC (common in organisations): then every launch and
every security group needs a subnet or VPC named ("Default VPCs",
https://docs.aws.amazon.com/vpc/latest/userguide/default-vpc.html).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudsh.services.ec2_calls import EC2Calls, tags_of


@dataclass(frozen=True)
class Subnet:
    id: str
    az: str
    vpc_id: str
    #: Instances launched into it get a public IPv4 address unless told otherwise.
    public_on_launch: bool
    free_ips: int
    name: str = ""

    def describe(self) -> str:
        """`subnet-0abc (us-east-1b, vpc-0def, public IPs)`."""
        named = f" {self.name!r}" if self.name else ""
        public = "public IPs" if self.public_on_launch else "no public IPs by default"
        return f"{self.id}{named} ({self.az}, {self.vpc_id}, {public})"


def _subnet(raw: dict[str, Any]) -> Subnet:
    return Subnet(
        id=str(raw["SubnetId"]),
        az=str(raw.get("AvailabilityZone", "")),
        vpc_id=str(raw.get("VpcId", "")),
        public_on_launch=bool(raw.get("MapPublicIpOnLaunch")),
        free_ips=int(raw.get("AvailableIpAddressCount") or 0),
        name=tags_of(raw.get("Tags")).get("Name", ""),
    )


async def zones_offering(ec2: EC2Calls, instance_type: str) -> list[str]:
    """The AZs of the region that offer the type, in name order (DescribeInstanceTypeOfferings)."""
    raw = await ec2.paginate(
        "describe_instance_type_offerings",
        "InstanceTypeOfferings",
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [instance_type]}],
    )
    return sorted({str(o["Location"]) for o in raw})


async def default_vpc(ec2: EC2Calls) -> str | None:
    raw = await ec2.call("describe_vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])
    vpcs = raw.get("Vpcs", ())
    return str(vpcs[0]["VpcId"]) if vpcs else None


async def subnets(ec2: EC2Calls, ids: list[str] | None = None) -> list[Subnet]:
    """Available subnets (those named by `ids`, else all), by AZ then id."""
    kwargs: dict[str, Any] = {"SubnetIds": ids} if ids else {}
    raw = await ec2.paginate("describe_subnets", "Subnets", **kwargs)
    found = [_subnet(s) for s in raw if s.get("State", "available") == "available"]
    return sorted(found, key=lambda s: (s.az, s.id))
