"""Images, volumes and snapshots, end to end on the sandbox through the real `cloudsh`."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli import cloudsh, ls_json, ok, one_line_error
from tests.sandbox_fixture import Sandbox


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _volumes() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in json.loads(ok("volumes", "--json"))}


@pytest.fixture(scope="module")
def boxes(sandbox: Sandbox) -> Iterator[dict[str, str]]:
    """Two running boxes in the same AZ, terminated at the end."""
    names = {"a": _name("sta"), "b": _name("stb")}
    for name in names.values():
        ok("launch", name, "--type", "t3.micro")
    yield names
    cloudsh("terminate", *names.values(), "--yes", "--discard-results")


def test_file_in_frozen_home_is_in_a_box_launched_from_the_image(boxes: dict[str, str]) -> None:
    a, image, thawed = boxes["a"], _name("img"), _name("thaw")
    ok("run", a, "--", "echo frozen-on-purpose > ~/notes.txt")
    r = cloudsh("freeze", a, image, "--yes")  # reboots the box first, the default
    assert r.returncode == 0, r.stderr
    rec = next(i for i in json.loads(ok("images", "--json")) if i["name"] == image)
    assert rec["id"].startswith("ami-") and rec["state"] == "available"
    assert rec["monthly_cost"] > 0 and rec["snapshots"]
    snaps = {s["id"]: s for s in json.loads(ok("snapshots", "--json"))}
    assert all(snaps[s]["name"] == image for s in rec["snapshots"])  # tagged with the image name

    ok("launch", thawed, "--image", image)
    try:
        assert ok("run", thawed, "--", "cat notes.txt").strip() == "frozen-on-purpose"
        # Deleting an image a live box was launched from is allowed, and said.
        r = cloudsh("image", "delete", image, "--yes")
        assert r.returncode == 0, r.stderr
        assert "launched from this image" in r.stderr and "freed" in r.stdout
    finally:
        cloudsh("terminate", thawed, "--yes")
    assert image not in {i["name"] for i in json.loads(ok("images", "--json"))}
    left = {s["id"] for s in json.loads(ok("snapshots", "--json"))}
    assert not set(rec["snapshots"]) & left  # its snapshots went with it


def test_volume_file_survives_snapshot_and_restore_on_another_box(boxes: dict[str, str]) -> None:
    a, b = boxes["a"], boxes["b"]
    vol, snap, copy = _name("work"), _name("ckpt"), _name("copy")
    ok("volume", "create", vol, "4", "--for", a)
    v = _volumes()[vol]
    assert (v["size_gb"], v["state"], v["attached_to"]) == (4, "available", None)

    out = ok("volume", "attach", vol, a, "--format", "--mount", "/mnt/work")
    assert "mounted on /mnt/work" in out
    assert _volumes()[vol]["attached_to"] == a
    ok("run", a, "--", "echo survives > /mnt/work/result.txt")
    # `show` says where the box has it mounted now (not only where cloudsh last mounted it).
    [shown] = [s for s in json.loads(ok("show", a, "--json"))["volumes"] if s["id"] == v["id"]]
    assert (shown["mount"], shown["mount_reported"], shown["size_gb"], shown["root"]) == ("/mnt/work", True, 4, False)
    # Found by volume id (NVMe serial), mounted by UUID with nofail.
    listing = ok("run", a, "--", "lsblk -o NAME,SERIAL,MOUNTPOINT; cat /etc/fstab")
    assert v["id"].replace("-", "") in listing
    assert "/mnt/work ext4 defaults,nofail" in listing and "UUID=" in listing

    ok("snapshot", vol, snap)
    assert any(s["name"] == snap and s["state"] == "completed" for s in json.loads(ok("snapshots", "--json")))
    ok("volume", "create", copy, "4", "--for", b, "--snapshot", snap)
    ok("volume", "attach", copy, b, "--mount", "/mnt/restored")
    assert ok("run", b, "--", "cat /mnt/restored/result.txt").strip() == "survives"
    # Stopped and started, the box mounts it again from its fstab, as Ubuntu does at boot.
    ok("stop", b, "--yes")
    ok("start", b)
    assert ok("run", b, "--", "cat /mnt/restored/result.txt").strip() == "survives"

    # Detach unmounts and drops the fstab line; the volume keeps its files.
    ok("volume", "detach", copy)
    assert _volumes()[copy]["state"] == "available"
    assert "/mnt/restored" not in ok("run", b, "--", "cat /etc/fstab")
    # A copy (same filesystem UUID) is not mounted beside its original: refused, undone.
    r = cloudsh("volume", "attach", copy, a, "--mount", "/mnt/again")
    assert r.returncode == 2 and "same filesystem UUID" in one_line_error(r)
    assert _volumes()[copy]["state"] == "available"
    ok("volume", "detach", vol)
    ok("volume", "attach", copy, a, "--mount", "/mnt/again")
    assert ok("run", a, "--", "cat /mnt/again/result.txt").strip() == "survives"

    ok("volume", "detach", copy)
    for name in (copy, vol):
        ok("volume", "delete", name, "--yes")
    ok("snapshot", "delete", snap, "--yes")
    assert not {vol, copy} & set(_volumes())


def test_bad_input_is_one_line_and_changes_nothing(sandbox: Sandbox, boxes: dict[str, str]) -> None:
    a = boxes["a"]
    vol, far = _name("bad"), _name("far")
    ok("volume", "create", vol, "2", "--for", a)
    ok("volume", "attach", vol, a, "--format", "--mount", "/mnt/bad")
    ok("run", a, "--", "echo keep > /mnt/bad/data.txt")

    # A busy mount is not detached, and the processes are named.
    ok("run", a, "--", "(cd /mnt/bad && exec sleep 120 3>>open.log >/dev/null 2>&1 &)")
    r = cloudsh("volume", "detach", vol)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert "busy" in line and "sleep (pid" in line
    assert _volumes()[vol]["state"] == "in-use"
    # A snapshot of it names the file still open for writing.
    snap = _name("open")
    r = cloudsh("snapshot", vol, snap)
    assert r.returncode == 0 and "open for writing" in r.stderr and "open.log" in r.stderr, r.stderr
    ok("snapshot", "delete", snap, "--yes")
    ok("run", a, "--", "kill $(pgrep -x sleep | sort -n | tail -1)")
    ok("volume", "detach", vol)

    # Formatting a volume that holds a filesystem is refused, and the attach is undone.
    r = cloudsh("volume", "attach", vol, a, "--format")
    assert r.returncode == 2 and "refusing to format" in one_line_error(r)
    assert _volumes()[vol]["state"] == "available"

    # Across AZs: refused, with the fix.
    ok("volume", "create", far, "2", "--az", "us-east-1b")
    r = cloudsh("volume", "attach", far, a)
    assert r.returncode == 2 and "us-east-1b" in one_line_error(r) and "--snapshot" in r.stderr
    assert _volumes()[far]["state"] == "available"

    # A box's root disk is no data volume: not detached (`umount /`), not deleted.
    inst = next(i for r in sandbox.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [a]}])["Reservations"]
                for i in r["Instances"] if i["State"]["Name"] == "running")
    root = next(m["Ebs"]["VolumeId"] for m in inst["BlockDeviceMappings"] if m["DeviceName"] == inst["RootDeviceName"])
    for verb in (("detach",), ("delete", "--yes")):
        r = cloudsh("volume", verb[0], root, *verb[1:])
        line = one_line_error(r)
        assert r.returncode == 1 and f"root disk of {a}" in line and "cloudsh freeze" in line, line
    [still] = sandbox.ec2().describe_volumes(VolumeIds=[root])["Volumes"]
    assert [x["InstanceId"] for x in still["Attachments"]] == [inst["InstanceId"]]

    # Names that collide.
    r = cloudsh("volume", "create", vol, "2", "--for", a)
    assert r.returncode == 2 and "already exists" in one_line_error(r)

    # A stopped box: start it first.
    stopped = _name("stp")
    ok("launch", stopped, "--type", "t3.micro", "--no-wait")
    ok("stop", stopped)
    try:
        r = cloudsh("volume", "attach", vol, stopped)
        assert r.returncode == 1 and "start it first" in one_line_error(r)
        # An attached volume cannot be deleted; a detached one can, and still asks.
        r = cloudsh("volume", "delete", vol)
        assert r.returncode == 2 and "--yes" in one_line_error(r)
    finally:
        cloudsh("terminate", stopped, "--yes")

    # Freezing a terminated box.
    gone = next(i for i in ls_json("--all") if i["name"] == stopped)
    r = cloudsh("freeze", gone["id"])
    assert r.returncode == 1 and "terminated" in one_line_error(r)

    for name in (vol, far):
        ok("volume", "delete", name, "--yes")


WRITER = """#!/bin/bash
mkdir -p out
for i in $(seq 400); do head -c 1M /dev/urandom >> out/data.bin; echo $i > out/progress; done
"""


def test_freeze_during_a_writing_job_reboots_first_and_reports_the_job(
    sandbox: Sandbox, boxes: dict[str, str], tmp_path: Path
) -> None:
    a, image = boxes["b"], _name("busy")
    script = tmp_path / "writer.sh"
    script.write_text(WRITER)
    script.chmod(0o755)
    # Without a terminal and without --yes or --no-reboot: refused before anything is made.
    r = cloudsh("freeze", a, image)
    assert r.returncode == 2 and "--no-reboot" in one_line_error(r)
    job = ok("script", a, str(script)).strip()
    [inst] = [i for i in ls_json() if i["name"] == a]
    home = sandbox.dir / "instances" / inst["id"] / "root" / "home" / "ubuntu"
    deadline = time.monotonic() + 30
    while not (home / "out" / "data.bin").exists() or (home / "out" / "data.bin").stat().st_size < 8 << 20:
        assert time.monotonic() < deadline, "the job did not start writing"
        time.sleep(0.05)
    r = cloudsh("freeze", a, image, "--yes")
    assert r.returncode == 0, r.stderr
    assert job in r.stderr  # the question named the job the reboot stops
    [rec] = [i for i in json.loads(ok("images", "--json")) if i["name"] == image]
    frozen = sandbox.dir / "images" / rec["id"] / "root" / "home" / "ubuntu" / "out" / "data.bin"
    # The image holds the disk as the reboot left it: what the box has now (SSH answers again).
    on_box = ok("run", a, "--", "sha256sum out/data.bin").split()[0]
    assert hashlib.sha256(frozen.read_bytes()).hexdigest() == on_box
    state = {j["id"]: j for j in json.loads(ok("jobs", "--json"))}[job]["state"]
    assert state in ("finished", "lost", "interrupted")  # stopped by the reboot, and said so
    # Names stay unique as EC2 keeps them, so a retried CreateImage makes no second image.
    with pytest.raises(ClientError, match="InvalidAMIName.Duplicate"):
        sandbox.ec2().create_image(InstanceId=inst["id"], Name=image, NoReboot=True)
    ok("image", "delete", image, "--yes")
