"""Two front ends at once on one name or one box: one wins, the other says why, and the
cloud holds what one of them alone would have made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest

from cloudsh.config import Settings
from cloudsh.ops import volumes
from tests.cli import by_name, cloudsh, ok
from tests.faults import DroppingProxy
from tests.sandbox_fixture import Sandbox
from tests.test_faults import backend_via

pytestmark = pytest.mark.sandbox


def _together(*commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run the real program once per command, all at the same time."""
    env = {**os.environ, "CLOUDSH_SANDBOX": "1"}
    procs = [
        (c, subprocess.Popen([sys.executable, "-m", "cloudsh", *c], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        for c in commands
    ]
    done = []
    for c, p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return done


def _error(r: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed run (its progress lines before it aside)."""
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("cloudsh:")]
    assert len(errors) == 1 and r.stderr.rstrip().endswith(errors[0]), r.stderr
    return errors[0]


def _live(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    return [
        i for r in sandbox.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
        for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def test_two_launches_of_one_name_make_one_box(sandbox: Sandbox) -> None:
    launch = ["launch", "twin", "--type", "t3.micro", "--no-wait"]
    try:
        results = _together(launch, launch)
        assert sorted(r.returncode for r in results)[0] == 0, [r.stderr for r in results]
        lost = [r for r in results if r.returncode != 0]
        assert len(lost) == 1, [r.stderr for r in results]
        line = _error(lost[0])
        assert lost[0].returncode in (1, 2) and "twin" in line and ("another" in line or "already exists" in line)
        [box] = _live(sandbox, "twin")
        ok("terminate", "twin", "--yes")
        ec2 = sandbox.ec2()
        while ec2.describe_instances(InstanceIds=[box["InstanceId"]])["Reservations"][0]["Instances"][0]["State"]["Name"] != "terminated":
            time.sleep(0.05)
        # stop and terminate of a box already gone say so alike.
        for verb in (["stop"], ["terminate", "--yes"]):
            r = cloudsh(*verb[:1], box["InstanceId"], *verb[1:])
            assert r.returncode == 1 and "terminated" in _error(r), (verb, r.stderr)
    finally:
        cloudsh("terminate", "twin", "--yes")


@pytest.fixture(scope="module")
def stopped(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A box whose job ran a while, then stopped from outside cloudsh (the console, EC2):
    no notice on the box, no record written before the stop."""
    name = "sizebox"
    ok("launch", name, "--type", "t3.micro")
    script = tmp_path_factory.mktemp("job") / "long.sh"
    script.write_text("#!/bin/sh\nsleep 300\n")
    script.chmod(0o755)
    ok("script", name, str(script))
    time.sleep(1.5)  # the job runs a moment (a runtime is whole seconds)
    [box] = _live(sandbox, name)
    sandbox.stop(box["InstanceId"])
    yield name
    cloudsh("terminate", name, "--yes")


def test_a_job_stopped_without_notice_has_a_runtime_and_cost(stopped: str) -> None:
    [job] = [j for j in json.loads(ok("jobs", "--json")) if j["instance_name"] == stopped]
    assert job["state"] == "interrupted"
    assert job["runtime_s"] >= 1 and job["cost"] > 0, job


def test_two_resizes_of_one_box_one_wins(sandbox: Sandbox, stopped: str) -> None:
    results = _together(["resize", stopped, "t3.small", "--yes"], ["resize", stopped, "t3.medium", "--yes"])
    won = [r for r in results if r.returncode == 0]
    lost = [r for r in results if r.returncode != 0]
    assert len(won) == 1 and len(lost) == 1, [(r.returncode, r.stderr) for r in results]
    line = _error(lost[0])
    assert lost[0].returncode == 1 and stopped in line and ("busy" in line or "changed since" in line), line
    rec = by_name(stopped)
    assert rec is not None and rec["type"] == won[0].args[2]
    # The claim is gone once the winner is done: the next resize goes ahead.
    ok("resize", stopped, "t3.micro", "--yes")
    assert [t for t in _live(sandbox, stopped)[0].get("Tags", []) if t["Key"] == "cloudsh:busy"] == []



async def test_an_attach_that_loses_its_device_name_takes_the_next(sandbox: Sandbox) -> None:
    """Another attach to the same box takes the device name cloudsh picked just before
    cloudsh's AttachVolume arrives: EC2 refuses that name, cloudsh attaches at the next."""
    box = sandbox.launch("t3.micro")
    ec2 = sandbox.ec2()
    az = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]["Placement"]["AvailabilityZone"]
    ours, rival = (ec2.create_volume(Size=1, AvailabilityZone=az, VolumeType="gp3")["VolumeId"] for _ in range(2))
    sandbox.past_window(time.monotonic())
    taken: list[str] = []

    def rival_first(request: bytes) -> bytes | None:
        if b"Action=AttachVolume" in request and not taken:
            taken.append(unquote(request.split(b"Device=")[1].split(b"&")[0].decode()))
            ec2.attach_volume(VolumeId=rival, InstanceId=box.id, Device=taken[0])
        return None

    proxy = DroppingProxy(sandbox.env["AWS_ENDPOINT_URL"], fail=rival_first)
    backend = backend_via(proxy.url, Settings.load())
    try:
        [inst] = await backend.ec2.list_instances(ids=[box.id])
        vol = await volumes.find_volume(backend, ours)
        said: list[str] = []
        done = await volumes.attach(backend, vol, inst, progress=said.append)
        assert taken and done.volume.device not in ("", taken[0]), (taken, done.volume.device)
        assert any(line.endswith(f"as {done.volume.device}") for line in said), said
    finally:
        await backend.close()
        proxy.close()
        ec2.terminate_instances(InstanceIds=[box.id])
