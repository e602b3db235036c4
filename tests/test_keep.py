"""Nothing lost: `terminate` pulls results home first and refuses `--yes` from a script
while something cannot come home; a stopped box is previewed; a second laptop with the
account's credentials (and its own key) reaches a box and syncs its job through EC2
Instance Connect. Checked with sha256 on both sides, through the real `cloudsh` program."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudsh.config import Settings
from cloudsh.errors import AWSError
from cloudsh.ops.reach import ssh_host
from tests.cli import cloudsh, ok
from tests.faults import DroppingProxy
from tests.sandbox_fixture import Sandbox
from tests.test_faults import backend_via

WRITER = """#!/bin/bash
mkdir -p out/sub
head -c 1048576 /dev/urandom > out/data.bin
echo "nested $RANDOM" > out/sub/b.txt
"""
HOLDER = """#!/bin/bash
mkdir -p live
exec 3>>live/log.txt
echo "started $RANDOM" >&3
for i in $(seq 600); do sleep 0.1; done
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _script(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def _box(sandbox: Sandbox, name: str) -> dict[str, Any]:
    [inst] = [
        i for r in sandbox.ec2().describe_instances()["Reservations"] for i in r["Instances"]
        if {"Key": "Name", "Value": name} in i.get("Tags", []) and i["State"]["Name"] != "terminated"
    ]
    return inst  # type: ignore[no-any-return]


def _finished(home: Path, job: str) -> None:
    """Wait until the box's agent records the job as over (read on the box's disk, no CLI)."""
    state = home / ".cloudsh" / "jobs" / job / "state.json"
    deadline = time.monotonic() + 30
    while not state.exists() or json.loads(state.read_text()).get("state") == "running":
        assert time.monotonic() < deadline, f"job {job} did not finish"
        time.sleep(0.05)


def _laptop(root: Path) -> dict[str, str]:
    """Another laptop: the same account and sandbox, its own home, state and key."""
    env = {"HOME": str(root), **{f"XDG_{d}_HOME": str(root / d.lower()) for d in ("CONFIG", "STATE", "CACHE")}}
    for d in env.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    return env


def _run_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudsh", *args], cwd=cwd, env={**os.environ, "CLOUDSH_SANDBOX": "1", **env},
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
    )


def _deny(request: bytes) -> bytes | None:
    """IAM's refusal of EC2 Instance Connect, answered at the edge."""
    if b"AWSEC2InstanceConnectService.SendSSHPublicKey" not in request:
        return None
    body = b'{"__type":"AccessDeniedException","Message":"not authorized: ec2-instance-connect:SendSSHPublicKey"}'
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


@pytest.fixture
def box(sandbox: Sandbox) -> Iterator[str]:
    name = f"keep-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    yield name
    with contextlib.suppress(ValueError):
        _box(sandbox, name)  # not terminated by the test: it failed on the way
        cloudsh("terminate", name, "--yes", "--discard-results")


async def test_any_laptop_reaches_the_box_and_terminate_keeps_results(
    sandbox: Sandbox, box: str, tmp_path: Path
) -> None:
    home = sandbox.dir / "instances" / _box(sandbox, box)["InstanceId"] / "root" / "home" / "ubuntu"
    first = tmp_path / "first"
    done = ok("script", box, str(_script(tmp_path, "w.sh", WRITER)), "--sync", f"out:{first}").strip()
    _finished(home, done)

    # A second laptop, its own key and no local state, reaches the box and syncs the job.
    other = _laptop(tmp_path / "laptop2")
    r = _run_in(tmp_path, other, "run", box, "--", "true")
    assert r.returncode == 0, r.stderr
    work = tmp_path / "laptop2" / "work"
    work.mkdir()
    r = _run_in(work, other, "sync", done)
    assert r.returncode == 0, r.stderr
    for rel in ("data.bin", "sub/b.txt"):
        assert _sha(work / "out" / rel) == _sha(home / "out" / rel)
    assert (Path(other["XDG_STATE_HOME"]) / "cloudsh" / "id_ed25519").read_text() != Settings.load().key_path.read_text()

    # Where EC2 Instance Connect is not allowed, the hint names the key file and key pair.
    settings = dataclasses.replace(Settings.load(), state_dir=tmp_path / "laptop3")
    proxy = DroppingProxy(sandbox.env["AWS_ENDPOINT_URL"], fail=_deny)
    backend: Any = backend_via(proxy.url, settings)
    try:
        inst = await backend.ec2.find(box)
        with pytest.raises(AWSError) as caught:
            await ssh_host(backend, inst)
        said = str(caught.value)
        assert inst.key_name and inst.key_name in said and f"copy {settings.key_path}" in said, said
    finally:
        await backend.close()
        proxy.close()

    # A job still writes: what can come home does (laptop 1 never synced `done`), then the
    # script's --yes is refused, naming each thing that cannot come home.
    live = ok("script", box, str(_script(tmp_path, "h.sh", HOLDER)), "--sync", f"live:{tmp_path / 'live'}").strip()
    r = cloudsh("terminate", box, "--yes")
    assert r.returncode == 2, r.stderr
    assert "--discard-results" in r.stderr.splitlines()[-1] and "Traceback" not in r.stderr
    assert any(f"{box}: job {live} is running, writing" in ln and "log.txt" in ln
               for ln in r.stderr.splitlines()), r.stderr
    for rel in ("data.bin", "sub/b.txt"):
        assert _sha(first / rel) == _sha(home / "out" / rel)
    assert _box(sandbox, box)["State"]["Name"] == "running"

    # A data volume that dies with the box and has no snapshot.
    data = f"{box}-data"
    ok("volume", "create", data, "1", "--for", box)
    ok("volume", "attach", data, box)
    inst = _box(sandbox, box)
    device = next(m["DeviceName"] for m in inst["BlockDeviceMappings"] if m["DeviceName"] != inst["RootDeviceName"])
    sandbox.ec2().modify_instance_attribute(
        InstanceId=inst["InstanceId"], BlockDeviceMappings=[{"DeviceName": device, "Ebs": {"DeleteOnTermination": True}}])

    # Stopped, the box is previewed without starting it: the job whose results are not
    # home (`done` came home after it ended), the disks deleted and their backups, and
    # what only the box could tell. Without a terminal --yes is refused; the box stays.
    ok("stop", box, "--yes")
    root_id = next(m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"] if m["DeviceName"] == inst["RootDeviceName"])
    [root_vol] = sandbox.ec2().describe_volumes(VolumeIds=[root_id])["Volumes"]
    root = next((t["Value"] for t in root_vol.get("Tags", []) if t["Key"] == "Name"), root_id)
    r = cloudsh("terminate", box, "--yes")
    assert r.returncode == 2 and "--discard-results" in r.stderr.splitlines()[-1], r.stderr
    said = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{box}: ")]
    assert re.fullmatch(
        rf"{box}: job {live}: results may not all be home, they stay on the box in /home/ubuntu/live \(last copied here \d+ min "
        rf"ago; start it and run `cloudsh sync {live}` to bring them\)", said[0]), said
    assert said[1:] == [
        f"{box}: could not check open files or unsynced files on the box: it is stopped",
        f"{box}: deletes {root} ({root_vol['Size']} GB), {data} (1 GB) and everything on them",
        f"{box}: no image or snapshot of root disk {root} exists",
        f"{box}: no image or snapshot of data volume {data} exists",
    ], r.stderr
    assert _box(sandbox, box)["State"]["Name"] == "stopped"
    ok("terminate", box, "--yes", "--discard-results")
