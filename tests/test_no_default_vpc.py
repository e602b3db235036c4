"""An account without a default VPC (`CLOUDSH_SANDBOX_NO_DEFAULT_VPC=1`): launch needs --subnet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli import cloudsh, one_line_error
from tests.sandbox_fixture import Sandbox, own_sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def no_vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, dict[str, str]]]:
    """A sandbox of its own, started without a default VPC; the environment that reaches it."""
    root = tmp_path_factory.mktemp("novpc")
    with own_sandbox(root, CLOUDSH_SANDBOX_NO_DEFAULT_VPC="1") as sb:
        yield sb, {"CLOUDSH_SANDBOX_DIR": str(sb.dir), "XDG_STATE_HOME": str(root / "state")}


def test_launch_without_a_subnet_says_which_subnets_could_work(no_vpc: tuple[Sandbox, dict[str, str]]) -> None:
    sb, env = no_vpc
    subnets = {s["Tags"][0]["Value"]: s["SubnetId"] for s in sb.ec2().describe_subnets()["Subnets"]}
    r = cloudsh("launch", "nowhere", "--type", "t3.micro", "--no-wait", env=env)
    line = one_line_error(r)
    assert r.returncode == 2 and "no default VPC" in line and "--subnet SUBNET" in line
    assert subnets["work-public"] in line and subnets["work-private"] in line
    assert "VPCIdNotSpecified" not in line
    # Nothing was made: no key pair but the test's own, no group beyond the VPC's.
    assert [k["KeyName"] for k in sb.ec2().describe_key_pairs()["KeyPairs"]] == [sb.key_name]
    groups = {g["GroupName"] for g in sb.ec2().describe_security_groups()["SecurityGroups"]}
    assert groups == {"default", f"{sb.key_name}-ssh"}  # the VPC's and the test's own


def test_launch_into_a_subnet_without_public_addresses(no_vpc: tuple[Sandbox, dict[str, str]]) -> None:
    """The box asks for a public address itself, and SSH answers (launch waits for it)."""
    sb, env = no_vpc
    private = next(s for s in sb.ec2().describe_subnets()["Subnets"] if not s["MapPublicIpOnLaunch"])
    r = cloudsh("launch", "inside", "--type", "t3.micro", "--subnet", private["SubnetId"], env=env)
    assert r.returncode == 0, r.stderr
    [inst] = [i for res in sb.ec2().describe_instances()["Reservations"] for i in res["Instances"]]
    assert inst["SubnetId"] == private["SubnetId"] and inst["Placement"]["AvailabilityZone"] == private["AvailabilityZone"]
    assert inst.get("PublicIpAddress")
    group = sb.ec2().describe_security_groups(GroupIds=[inst["SecurityGroups"][0]["GroupId"]])["SecurityGroups"][0]
    assert group["VpcId"] == private["VpcId"] and group["GroupName"] == "cloudsh-ssh"
