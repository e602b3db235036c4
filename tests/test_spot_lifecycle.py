"""Spot boxes stop instead of dying, wait for EC2 to restart them (or are relaunched from
their disk); terminate cancels the spot request first and says what it will destroy."""

from __future__ import annotations

import json
import time
import uuid

from cloudsh.config import Settings
from cloudsh.ops.preview import terminate_preview
from cloudsh.root import connect
from tests.cli import by_name, cloudsh, ls_json, ok, one_line_error
from tests.sandbox_fixture import Sandbox


def _wait_state(name: str, state: str, timeout: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        rec = by_name(name)
        if rec is not None and rec["state"] == state:
            return rec
        assert time.monotonic() < deadline, f"{name} is {rec and rec['state']}, not {state}"
        time.sleep(0.3)


async def test_spot_box_survives_interruption_and_terminate_cancels_its_request(sandbox: Sandbox) -> None:
    name, data = f"spot-{uuid.uuid4().hex[:6]}", f"keep-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro", "--spot")
    rec = by_name(name)
    assert rec is not None and rec["market"] == "spot"
    request_id = str(rec["spot_request_id"])
    assert request_id.startswith("sir-")
    [req] = sandbox.ec2().describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])["SpotInstanceRequests"]
    assert (req["Type"], req["State"], req["InstanceId"]) == ("persistent", "active", rec["id"])
    assert req["InstanceInterruptionBehavior"] == "stop"

    # An interruption stops the box (persistent request, behaviour stop); its disk stays.
    # Only EC2 may start it again; `relaunch` makes a new box of its disk now.
    ok("run", name, "--", "echo still-here > ~/progress.txt")
    ok("sandbox", "interrupt", name, env={"CLOUDSH_SANDBOX_NOTICE_S": "0.5"})
    _wait_state(name, "stopped")
    [req] = sandbox.ec2().describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])["SpotInstanceRequests"]
    assert (req["State"], req["Status"]["Code"]) == ("disabled", "instance-stopped-no-capacity")
    r = cloudsh("start", name)
    assert r.returncode == 1 and f"relaunch {name}" in one_line_error(r)
    # The interruption took t3.micro's capacity in its AZ: the new box goes where there is some.
    try:
        ok("relaunch", name, "--yes")
    finally:
        ok("sandbox", "capacity", "t3.micro", str(rec["az"]), "-1")
    [old] = [i for i in ls_json("--all") if i["id"] == rec["id"]]
    rec = by_name(name)
    assert old["state"] == "terminated" and rec is not None and rec["id"] != old["id"] and rec["market"] == "spot"
    assert ok("run", name, "--", "cat progress.txt").strip() == "still-here"
    request_id = str(rec["spot_request_id"])

    # The terminate preview: the root disk dies, a data volume is kept, the spot
    # request is cancelled, and how old the latest backup is.
    ok("volume", "create", data, "1", "--for", name)
    ok("volume", "attach", data, name)
    backend = connect(Settings.load(), sandbox=True)
    try:
        inst = await backend.ec2.find(name)
        [loss] = await terminate_preview(backend, [inst])
        text = loss.describe()
        assert f"cancels spot request {request_id}" in text
        assert "deletes" in text and f"keeps {data} (1 GB)" in text
        assert "no image or snapshot of root disk" in text
        ok("snapshot", data)
        # A snapshot of the kept data volume is no backup of the root disk that dies.
        [loss] = await terminate_preview(backend, [await backend.ec2.find(name)])
        assert "no image or snapshot of root disk" in loss.describe()
    finally:
        await backend.close()

    r = cloudsh("terminate", name, "--yes")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines.index(f"cancelling spot requests {request_id}") < lines.index(f"terminating {name}")
    live = sandbox.ec2().describe_spot_instance_requests()["SpotInstanceRequests"]
    assert not [q for q in live if q["SpotInstanceRequestId"] == request_id and q["State"] in ("open", "active")]
    # Terminating detached the kept volume, as EC2 does; it and its snapshot remain.
    kept = {v["name"]: v for v in json.loads(ok("volumes", "--json"))}[data]
    assert (kept["state"], kept["attached_to"]) == ("available", None)
    ok("volume", "delete", data, "--yes")
    for snap in [s for s in json.loads(ok("snapshots", "--json")) if s["volume"] == data]:
        ok("snapshot", "delete", snap["id"], "--yes")
