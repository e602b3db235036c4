"""Resizing a spot box moves it onto a new box of the new type, since EC2 cannot change a
spot box's type: its files, volumes and jobs go along, and a failure leaves it as it was."""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.cli import by_name, cloudsh, ls_json, ok
from tests.sandbox_fixture import Sandbox


def test_spot_resize_moves_the_box_and_rolls_back_on_failure(sandbox: Sandbox) -> None:
    if sandbox.read().isolation != "bubblewrap":
        pytest.skip("volumes mount only with bubblewrap isolation")
    name, data = f"mv-{uuid.uuid4().hex[:6]}", f"mvd-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro", "--spot")
    try:
        old = by_name(name)
        assert old is not None
        ok("volume", "create", data, "1", "--for", name)
        ok("volume", "attach", data, name, "--format", "--mount", "/mnt/data")
        ok("run", name, "--", "echo kept > ~/home.txt && echo on-volume > /mnt/data/v.txt")

        # EC2 refuses to change a spot box's type outright.
        with pytest.raises(ClientError) as refused:
            sandbox.ec2().modify_instance_attribute(InstanceId=old["id"], InstanceType={"Value": "t3.small"})
        assert refused.value.response["Error"]["Code"] == "UnsupportedOperation"

        # No g5.xlarge capacity where its volume is: every step is undone, and it says so.
        try:
            ok("sandbox", "capacity", "g5.xlarge", old["az"], "0")
            r = cloudsh("resize", name, "g5.xlarge", "--yes")
        finally:
            ok("sandbox", "capacity", "g5.xlarge", old["az"], "-1")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"rolled back, {name} is as it was" in r.stderr
        live = {i["name"]: i for i in ls_json()}
        assert (live[name]["id"], live[name]["type"], live[name]["state"]) == (old["id"], "t3.micro", "running")
        assert f"{name}-moving" not in live and not json.loads(ok("images", "--json"))
        assert ok("run", name, "--", "cat /mnt/data/v.txt").strip() == "on-volume"

        r = cloudsh("resize", name, "g5.xlarge", "--yes")
        assert r.returncode == 0, r.stderr
        assert "t3.micro spot ($" in r.stderr and "-> g5.xlarge spot ($" in r.stderr  # $/h before and after
        boxes = [i for i in ls_json("--all") if i["name"] == name]
        [new] = [i for i in boxes if i["state"] != "terminated"]
        assert (new["type"], new["market"], new["state"]) == ("g5.xlarge", "spot", "running")
        assert [i["id"] for i in boxes if i["state"] == "terminated"] == [old["id"]]
        assert ok("run", name, "--", "cat ~/home.txt /mnt/data/v.txt").split() == ["kept", "on-volume"]
        vol = {v["name"]: v for v in json.loads(ok("volumes", "--json"))}[data]
        assert vol["attached_to_id"] == new["id"]
        assert not json.loads(ok("images", "--json"))  # the move's image is gone too
    finally:
        cloudsh("volume", "detach", data)
        cloudsh("terminate", name, "--yes")
        cloudsh("volume", "delete", data, "--yes")
