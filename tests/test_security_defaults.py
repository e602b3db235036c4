"""The README's security defaults, read back through the EC2 API after the real program
made or changed a box: a launch, a start, a resize and a launch from a frozen image.

Each default is a promise a one-line change to the product would break:
IMDSv2 required (`HttpTokens`), an encrypted root volume, SSH allowed by /32 rules only in
cloudsh's own group (never 0.0.0.0/0), the private key readable by its owner only, and the
key pair named after the key's fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from cloudsh.config import Settings
from tests.cli import cloudsh, ok
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox


def _instance(ec2: Any, name: str) -> dict[str, Any]:
    found = [
        i for r in ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
        for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    assert len(found) == 1, found
    return found[0]


def _assert_defaults(sandbox: Sandbox, name: str, state_dir: Path) -> None:
    ec2 = sandbox.ec2()
    inst = _instance(ec2, name)
    assert inst["MetadataOptions"]["HttpTokens"] == "required", inst["MetadataOptions"]
    [root] = [m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == inst["RootDeviceName"]]
    volume = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
    assert volume["Encrypted"] is True, volume

    # Only cloudsh's own group: the test fixture's hand-made open group is not cloudsh's.
    settings = Settings.load()
    groups = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in inst["SecurityGroups"]])["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == [settings.security_group]
    assert {"Key": "cloudsh:managed", "Value": "1"} in groups[0].get("Tags", [])  # so `orphans` knows it
    ssh = [p for p in groups[0]["IpPermissions"] if p.get("FromPort", 0) <= 22 <= p.get("ToPort", 65535)]
    cidrs = [r["CidrIp"] for p in ssh for r in p.get("IpRanges", [])]
    assert cidrs and all(c.endswith("/32") for c in cidrs), cidrs
    assert "0.0.0.0/0" not in cidrs and not any(r for p in ssh for r in p.get("Ipv6Ranges", []))

    key = state_dir / "cloudsh" / "id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    blob = key.with_name("id_ed25519.pub").read_text().split()[1]
    fingerprint = hashlib.sha256(base64.b64decode(blob)).hexdigest()[:8]
    assert inst["KeyName"] == f"cloudsh-{fingerprint}"
    pairs = ec2.describe_key_pairs(KeyNames=[inst["KeyName"]])["KeyPairs"]
    assert len(pairs) == 1 and {"Key": "cloudsh:managed", "Value": "1"} in pairs[0].get("Tags", [])


def test_security_defaults_hold_after_launch_start_resize_and_thaw(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A state directory of its own: the key is made by this very launch.
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    box, image, thawed = "secbox", "secimg", "secthaw"
    ok("launch", box, "--type", "t3.micro")
    try:
        _assert_defaults(sandbox, box, state)
        ok("freeze", box, image, "--no-reboot", "--yes")
        ok("stop", box, "--yes")
        ok("resize", box, "t3.small", "--yes")
        ok("start", box)
        assert _instance(sandbox.ec2(), box)["InstanceType"] == "t3.small"
        _assert_defaults(sandbox, box, state)
        ok("launch", thawed, "--image", image, "--type", "t3.micro", "--no-wait")
        _assert_defaults(sandbox, thawed, state)
        images = {i["name"]: i for i in json.loads(ok("images", "--json"))}
        assert image in images
    finally:
        cloudsh("terminate", box, thawed, "--yes")
        cloudsh("image", "delete", image, "--yes")
