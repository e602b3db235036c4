"""The security group is a real firewall on the sandbox, and SSH follows the laptop.

The sandbox plays this machine's public address (`cloudsh sandbox address`); a box's SSH
server lets a connection in only if a rule of its groups covers it, else never answers.
cloudsh, before SSH and again on a connection timeout, opens the box's group to the
current address and revokes the /32s it added before, never the user's own rules.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import botocore.exceptions
import pytest

from cloudsh.api import Cloud
from cloudsh.sandbox.control import sandbox_request
from cloudsh.sandbox.firewall import CONTROL_PATH
from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox

GROUP = "cloudsh-firewall-test"
ENV = {"CLOUDSH_SECURITY_GROUP": GROUP}
USER_RULE = {"CidrIp": "198.51.100.0/24", "Description": "office"}
#: What cloudsh on another machine (another key) added: not this machine's to revoke.
OTHER_MACHINE = {"CidrIp": "203.0.113.7/32", "Description": "cloudsh: this machine (cloudsh-0therkey)"}


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[str]:
    """A box cloudsh launched into its own group, so other tests' boxes keep theirs."""
    ok("launch", "fwbox", "--type", "t3.micro", env=ENV)
    try:
        yield "fwbox"
    finally:
        sandbox_request(sandbox.settings, CONTROL_PATH, {"address": "127.0.0.1"}, "the address")
        sandbox.ec2().terminate_instances(InstanceIds=[_instance_id(sandbox)])


def _instance_id(sandbox: Sandbox) -> str:
    found = sandbox.ec2().describe_instances(
        Filters=[{"Name": "tag:Name", "Values": ["fwbox"]}, {"Name": "instance-state-name", "Values": ["running"]}]
    )
    return str(found["Reservations"][0]["Instances"][0]["InstanceId"])


def _group(sandbox: Sandbox) -> str:
    groups = sandbox.ec2().describe_security_groups(Filters=[{"Name": "group-name", "Values": [GROUP]}])
    return str(groups["SecurityGroups"][0]["GroupId"])


def _ssh_ranges(sandbox: Sandbox, group: str) -> list[dict[str, str]]:
    perms = sandbox.ec2().describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    return sorted((r for p in perms if p.get("FromPort") == 22 for r in p["IpRanges"]), key=lambda r: r["CidrIp"])


def test_ssh_follows_the_address_through_a_real_firewall(sandbox: Sandbox, box: str) -> None:
    group = _group(sandbox)
    sandbox.ec2().authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [USER_RULE, OTHER_MACHINE]}]
    )
    assert ok("sandbox", "address", "127.0.0.9").strip() == "127.0.0.9"
    assert ok("sandbox", "address").strip() == "127.0.0.9"

    r = cloudsh("run", box, "--", "true")
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "SSH now allowed" in line]
    assert said == [f"SSH now allowed from 127.0.0.9 ({group}); removed cloudsh's old rule for 127.0.0.1"]
    ranges = _ssh_ranges(sandbox, group)
    ours = [r for r in ranges if r.get("Description", "").startswith("cloudsh: this machine (cloudsh-")]
    assert [r["CidrIp"] for r in ours if r != OTHER_MACHINE] == ["127.0.0.9/32"]
    assert USER_RULE in ranges and OTHER_MACHINE in ranges

    again = cloudsh("run", box, "--", "true")
    assert again.returncode == 0 and "SSH now allowed" not in again.stderr, again.stderr

    # The firewall really drops what no rule allows: the user's own clients time out.
    sandbox.ec2().revoke_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "127.0.0.9/32"}]}],
    )
    launched = sandbox.box(_instance_id(sandbox))

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(sandbox.connect(launched, connect_timeout=1))
    plain = subprocess.run(
        ["ssh", *sandbox.ssh_argv(launched), "-o", "ConnectTimeout=2", f"ubuntu@{launched.host}", "true"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30,
    )
    assert plain.returncode == 255 and "timed out" in plain.stderr, plain.stderr

    # cloudsh's remembered check still says all is well: the connection times out, and
    # the timeout makes it look again, reopen the group and connect.
    r = cloudsh("run", box, "--", "echo", "back", env={"CLOUDSH_SSH_CONNECT_TIMEOUT_S": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "back\n"
    assert f"SSH now allowed from 127.0.0.9 ({group})" in r.stderr


def test_a_bad_address_is_one_line() -> None:
    r = cloudsh("sandbox", "address", "300.1.2.3")
    assert r.returncode == 2
    assert "is not an IPv4 address" in one_line_error(r)


def test_a_group_refuses_its_61st_inbound_rule(sandbox: Sandbox) -> None:
    ec2 = sandbox.ec2()
    group = ec2.create_security_group(GroupName="sixty", Description="full")["GroupId"]
    sandbox.past_window(time.monotonic())  # the group is new: EC2 may not know it yet

    def allow(*cidrs: str) -> None:
        ranges = [{"CidrIp": c} for c in cidrs]
        ec2.authorize_security_group_ingress(
            GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": ranges}]
        )

    allow(*(f"10.0.0.{i}/32" for i in range(60)))
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        allow("10.0.1.0/32")
    assert refused.value.response["Error"]["Code"] == "RulesPerSecurityGroupLimitExceeded"
    assert refused.value.response["Error"]["Message"] == "The maximum number of rules per security group has been reached."


def test_the_python_api_follows_the_address_too(sandbox: Sandbox, box: str, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox_request(sandbox.settings, CONTROL_PATH, {"address": "127.0.0.10"}, "the address")
    cloud = Cloud(sandbox=True)
    try:
        assert cloud.instance(box).run("echo api").stdout == "api\n"
    finally:
        cloud.close()
    assert f"SSH now allowed from 127.0.0.10 ({_group(sandbox)})" in capsys.readouterr().err
