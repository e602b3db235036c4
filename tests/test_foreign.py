"""Boxes cloudsh did not launch (a colleague's on a shared account), on the sandbox.

A box launched by a plain boto3 `run_instances` has no `cloudsh:managed` tag, exactly
like a colleague's: it is listed, marked, but no command naming several boxes touches it,
and a destructive command on it needs its id. Through the real binary and the Python API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cloudsh.api import Cloud
from cloudsh.errors import UsageError
from tests.cli import by_name, cloudsh, ls_json, ok, one_line_error
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox


def state(sb: Sandbox, iid: str) -> str:
    found = sb.ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return str(found["State"]["Name"])


def colleagues_box(sb: Sandbox, name: str, **tags: str) -> str:
    iid = sb.launch("t3.micro", wait=False, tags={"Name": name, **tags}).id
    sb.past_window(sb.made[iid])  # a colleague's box that exists already, not one launching now
    return iid


@pytest.fixture(scope="module")
def boxes(sandbox: Sandbox) -> Iterator[dict[str, Any]]:
    """A box of cloudsh's own and a colleague's (Owner=alice), both running."""
    tag = uuid.uuid4().hex[:6]
    mine, theirs = f"mine-{tag}", f"colleague-{tag}"
    ok("launch", mine, "--type", "t3.micro", "--no-wait")
    their_id = colleagues_box(sandbox, theirs, Owner="alice")
    my_id = next(r["id"] for r in ls_json() if r["name"] == mine)
    yield {"mine": mine, "theirs": theirs, "their_id": their_id, "my_id": my_id}
    sandbox.ec2().terminate_instances(InstanceIds=[their_id])
    cloudsh("terminate", mine, "--yes")


def test_ls_marks_it_with_whose_it_looks_like(boxes: dict[str, Any]) -> None:
    theirs, mine = by_name(boxes["theirs"]), by_name(boxes["mine"])
    assert theirs is not None and mine is not None
    assert theirs["managed"] is False and theirs["owner"] == "alice"
    assert mine["managed"] is True
    r = cloudsh("ls")
    assert r.returncode == 0
    header = r.stdout.splitlines()[0].split()
    assert header[-1] == "OWNER"
    [line] = [x for x in r.stdout.splitlines() if boxes["their_id"] in x]
    assert line.startswith(boxes["theirs"] + "*") and line.split()[-1] == "alice"
    [line] = [x for x in r.stdout.splitlines() if boxes["my_id"] in x]
    assert line.startswith(boxes["mine"] + " ") and line.split()[-1] == "-"
    assert "not launched by cloudsh" in r.stderr


def test_commands_naming_several_boxes_never_touch_it(sandbox: Sandbox, boxes: dict[str, Any]) -> None:
    for verb in (("terminate", "--yes"), ("stop", "--no-wait"), ("start", "--no-wait")):
        r = cloudsh(verb[0], boxes["theirs"], boxes["mine"], verb[1])
        assert r.returncode == 2, r
        line = one_line_error(r)
        assert boxes["theirs"] in line and "alice" in line and boxes["their_id"] in line
        assert boxes["mine"] not in line  # it names the box that stopped it, not the others
    # Nothing was done to either.
    assert state(sandbox, boxes["their_id"]) in ("pending", "running")
    assert state(sandbox, boxes["my_id"]) in ("pending", "running")


def test_a_destructive_command_on_it_asks_for_its_id(sandbox: Sandbox, boxes: dict[str, Any]) -> None:
    for argv in (("terminate", boxes["theirs"], "--yes"), ("stop", boxes["theirs"]),
                 ("resize", boxes["theirs"], "t3.small", "--yes"), ("freeze", boxes["theirs"])):
        r = cloudsh(*argv)
        assert r.returncode == 2, r
        line = one_line_error(r)
        assert "alice's" in line
        assert f"name it by its id, {boxes['their_id']}, to confirm it is the one you mean" in line
    assert state(sandbox, boxes["their_id"]) in ("pending", "running")
    # Not destructive, alone: allowed (nothing to start: it runs).
    assert cloudsh("start", boxes["theirs"], "--no-wait").returncode == 0


def test_sweeps_leave_it_out(boxes: dict[str, Any]) -> None:
    text = ok("ssh-config")
    assert f"Host {boxes['theirs']}\n" not in text


def test_a_name_means_cloudshs_own_box_first(sandbox: Sandbox) -> None:
    name = f"dup-{uuid.uuid4().hex[:6]}"
    their_id = colleagues_box(sandbox, name, Owner="bob")
    try:
        # A colleague's box of the same name does not block the launch...
        ok("launch", name, "--type", "t3.micro", "--no-wait")
        mine = [r for r in ls_json() if r["name"] == name and r["managed"]]
        assert len(mine) == 1
        # ...and the name then means cloudsh's own box.
        out = ok("stop", name, "--no-wait")
        # The state EC2 answered the stop with, not the one before it.
        assert out.split()[:2] in ([name, "stopping"], [name, "stopped"]), out
        assert state(sandbox, mine[0]["id"]) in ("stopping", "stopped")
        assert state(sandbox, their_id) in ("pending", "running")
        ok("terminate", name, "--yes")
        assert state(sandbox, their_id) in ("pending", "running")
    finally:
        sandbox.ec2().terminate_instances(InstanceIds=[their_id])


def test_terminate_by_id_says_whose_and_works(sandbox: Sandbox) -> None:
    name = f"theirs-{uuid.uuid4().hex[:6]}"
    iid = colleagues_box(sandbox, name, Owner="carol")
    r = cloudsh("terminate", iid)  # no terminal, no --yes: refused as for any box
    assert r.returncode == 2 and state(sandbox, iid) in ("pending", "running")
    r = cloudsh("terminate", iid, "--yes")
    assert r.returncode == 0, r.stderr
    assert "carol's" in r.stderr and f"{name} terminated" in r.stdout
    assert state(sandbox, iid) in ("shutting-down", "terminated")


def test_owner_falls_back_to_the_key_pair(sandbox: Sandbox) -> None:
    iid = sandbox.launch("t3.micro", wait=False).id  # no tags at all
    sandbox.past_window(sandbox.made[iid])
    try:
        rec = next(r for r in ls_json() if r["id"] == iid)
        assert rec["managed"] is False and rec["owner"] == sandbox.key_name
    finally:
        sandbox.ec2().terminate_instances(InstanceIds=[iid])


def test_the_api_acts_on_it_only_when_looked_up_by_id(sandbox: Sandbox) -> None:
    name = f"apitheirs-{uuid.uuid4().hex[:6]}"
    iid = colleagues_box(sandbox, name, Owner="dave")
    with Cloud(sandbox=True) as cloud:
        listed = next(b for b in cloud.instances() if b.id == iid)
        assert not listed.managed and listed.owner == "dave"
        assert "not cloudsh's: dave" in repr(listed)
        assert f"{name}*" in repr(cloud.instances())
        for box in (listed, cloud.instance(name)):
            with pytest.raises(UsageError, match="name it by its id"):
                box.terminate()
            with pytest.raises(UsageError, match="name it by its id"):
                box.stop(wait=False)
        with pytest.raises(UsageError, match="name it by its id"):
            cloud.terminate(name)
        assert state(sandbox, iid) in ("pending", "running")
        cloud.instance(iid).terminate()
    assert state(sandbox, iid) in ("shutting-down", "terminated")
