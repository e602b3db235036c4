"""Where a launch goes, and whether the account's quota lets it run, decided before
anything is created.

- Places: `--subnet` (its AZ), else `--az`, else every AZ that offers the type
  (DescribeInstanceTypeOfferings), cheapest spot price first for spot. `launch` tries
  them in order and moves on after a capacity error.
- No default VPC: a launch needs `--subnet`; the error lists the subnets that could work.
- vCPU quota: EC2 counts running vCPUs per family class and market against one quota;
  past it a launch or start is refused (VcpuLimitExceeded, MaxSpotInstanceCountExceeded).
  Checked here first, so the user learns the quota's name and how to ask for more before
  anything exists. Capacity (AWS has none right now) and quota (the account may not) are
  different problems and never share a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cloudsh.errors import UsageError
from cloudsh.models import Instance, InstanceType, Prices
from cloudsh.services.backend import Backend
from cloudsh.services.networks import Subnet, default_vpc, subnets, zones_offering
from cloudsh.services.quotas import QuotaService, VcpuQuota, family_class


@dataclass(frozen=True)
class Place:
    az: str
    #: None: the default VPC's subnet in `az` (EC2 picks it).
    subnet: Subnet | None = None
    vpc_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.az} ({self.subnet.id})" if self.subnet else self.az


async def places(
    backend: Backend,
    itype: InstanceType,
    *,
    spot: bool,
    az: str | None = None,
    subnet: str | None = None,
    prices: asyncio.Future[Prices] | None = None,
) -> list[Place]:
    """The places to try, in order; a usage error when there are none."""
    ec2 = backend.ec2
    if subnet:
        found = await subnets(ec2, [subnet])
        if not found:
            raise UsageError(f"no subnet {subnet} in {ec2.region}", "list them with `aws ec2 describe-subnets`")
        s = found[0]
        if az and az != s.az:
            raise UsageError(f"subnet {s.id} is in {s.az}, not {az}", "drop --az, or pick a subnet in that AZ")
        if not await ec2.offered_in_az(itype.name, s.az):
            raise UsageError(f"{itype.name} is not offered in {s.az}, where subnet {s.id} is", "pick a subnet in another AZ")
        return [Place(s.az, s, s.vpc_id)]
    zones, vpc = await asyncio.gather(zones_offering(ec2, itype.name), default_vpc(ec2))
    if az:
        if az not in zones:
            raise UsageError(
                f"{itype.name} is not offered in {az}",
                f"AZs that offer it: {', '.join(zones)}" if zones else "pick another type (`cloudsh prices`)",
            )
        zones = [az]
    elif spot and prices is not None:
        zones = await _cheapest_first(zones, itype.name, prices)
    if not zones:
        raise UsageError(f"{itype.name} is not offered in any AZ of {ec2.region}", "pick another type (`cloudsh prices`)")
    if vpc is None:
        usable = [s for s in await subnets(ec2) if s.az in zones]
        listed = "; ".join(s.describe() for s in usable[:8])
        raise UsageError(
            f"this account has no default VPC in {ec2.region}, so a launch needs a subnet: use --subnet SUBNET",
            f"subnets that could work: {listed}" if usable
            else f"no subnet is in {'/'.join(zones) if az else 'an AZ that offers ' + itype.name}: create one first",
        )
    return [Place(z, None, vpc) for z in zones]


async def _cheapest_first(zones: list[str], instance_type: str, prices: asyncio.Future[Prices]) -> list[str]:
    """Spot AZs by their current price; unknown prices last (a slow price source never delays a launch)."""
    done, _ = await asyncio.wait({prices}, timeout=2.0)
    if not done or prices.exception() is not None:
        return zones
    found = prices.result().get(instance_type)
    by_az = dict(found.spot_by_az) if found else {}
    return sorted(zones, key=lambda z: (z not in by_az, by_az.get(z, 0.0), z))


async def check_quota(
    backend: Backend,
    itype: InstanceType,
    *,
    spot: bool,
    besides: Collection[str] = (),
    instances: Sequence[Instance] | None = None,
) -> str:
    """Refuse a box of `itype` that would pass its vCPU quota; returns a note for the plan.

    `besides`: instance ids not to count (the box being resized); `instances`: the
    account's instances when the caller has just listed them."""
    quota = await QuotaService(backend.clients).vcpu_quota(itype.name, spot=spot)
    if quota.limit is None:
        return f"{quota.aws_name} could not be read"
    ec2 = backend.ec2
    others = [
        i for i in (await ec2.list_instances() if instances is None else instances)
        if i.id not in besides and i.state in ("running", "pending")
        and (i.market == "spot") == spot and family_class(i.type) == quota.family_class
    ]
    types = await ec2.instance_types({i.type for i in others})
    used = sum(types[i.type].vcpus for i in others if i.type in types)
    need = used + itype.vcpus
    if need > quota.limit:
        raise UsageError(quota_message(quota, itype, used), quota_hint(quota, need, ec2.region))
    return f"{quota.aws_name}: {need:g} of {quota.limit:g} vCPUs in use after"


def quota_message(quota: VcpuQuota, itype: InstanceType, used: float) -> str:
    """`Running On-Demand G and VT instances: 0 vCPUs, this needs 4`."""
    in_use = f" ({used:g} in use by other boxes)" if used else ""
    return f"{quota.aws_name}: {quota.limit or 0:g} vCPUs{in_use}, this {itype.name} needs {itype.vcpus}"


def quota_hint(quota: VcpuQuota, need: float, region: str) -> str:
    return (
        f"ask AWS for {need:g}: https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{quota.code} "
        f"or `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {quota.code} "
        f"--desired-value {need:g} --region {region}`"
    )
