"""Ctrl-C (SIGINT to the real program) in the middle of `launch` and `freeze`: what was
made is named, and nothing is left that the next command cannot find or finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.cli import cloudsh, ctrl_c_reaches_it, ok
from tests.sandbox_fixture import Sandbox, own_sandbox

pytestmark = pytest.mark.sandbox

#: Every in-between state (pending, an image pending, ...) lasts this long here, so a
#: Ctrl-C lands while the program waits.
STEP_S = 3


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of its own with slow in-between states; the real `cloudsh` finds it
    through CLOUDSH_SANDBOX_DIR while this module runs."""
    with own_sandbox(tmp_path_factory.mktemp("slow-steps"), CLOUDSH_SANDBOX_TIMING=str(STEP_S)) as sb:
        yield sb


def interrupt_when(args: list[str], said: str) -> tuple[int, str]:
    """Run `cloudsh ARGS`, send SIGINT once a line of its stderr holds `said`; its exit
    status and all it wrote on stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudsh", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "CLOUDSH_SANDBOX": "1"}, preexec_fn=ctrl_c_reaches_it,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if said in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    return proc.wait(timeout=60), "".join(lines) + rest


def _instances(sb: Sandbox, name: str) -> list[dict[str, object]]:
    return [
        i for r in sb.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
        for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]


def test_ctrl_c_in_launch_and_freeze(slow: Sandbox) -> None:
    status, err = interrupt_when(["launch", "slowbox", "--type", "t3.micro"], "bills from now")
    [box] = _instances(slow, "slowbox")
    iid = box["InstanceId"]
    assert status == 130, err
    said = next(line for line in err.splitlines() if line.startswith("interrupted") or "interrupted:" in line)
    assert iid in said and "billing" in said and "cloudsh launch slowbox" in said and f"cloudsh terminate {iid}" in said
    assert "Traceback" not in err

    # The same launch again waits for that box instead of refusing or making a second.
    again = cloudsh("launch", "slowbox", "--type", "t3.micro")
    assert again.returncode == 0, again.stderr
    assert f"{iid} (slowbox) was left by an interrupted launch" in again.stderr
    assert [i["InstanceId"] for i in _instances(slow, "slowbox")] == [iid]
    # Once adopted it is an ordinary box: another launch of that name is a clash.
    clash = cloudsh("launch", "slowbox", "--type", "t3.micro")
    assert clash.returncode == 2 and "already exists" in clash.stderr

    # Ctrl-C while the image is made: the image and its snapshots are tagged and named.
    status, err = interrupt_when(["freeze", "slowbox", "slowimg", "--no-reboot", "--yes"], ": pending")
    assert status == 130 and "Traceback" not in err, err
    [img] = slow.ec2().describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["slowimg"]}])["Images"]
    said = next(line for line in err.splitlines() if "interrupted:" in line)
    assert img["ImageId"] in said and "cloudsh image delete slowimg" in said
    snaps = [m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"] if "Ebs" in m]
    assert snaps and all(s in said for s in snaps)
    for snap in slow.ec2().describe_snapshots(SnapshotIds=snaps)["Snapshots"]:
        tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
        assert tags.get("cloudsh:image") == img["ImageId"], tags
    names = [i["name"] for i in json.loads(ok("images", "--json"))]
    assert "slowimg" in names
    ok("image", "delete", "slowimg", "--yes")
    ok("terminate", "slowbox", "--yes")
