"""`ssh-config`'s names follow the box: real OpenSSH through cloudsh's `ProxyCommand`
reaches it across stop/start (a new address), a new address of this machine (the
sandbox's real firewall), and with `--wake` starts a stopped box; a box that is gone is
one line from cloudsh and OpenSSH's exit status 255."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudsh.sandbox.control import sandbox_request
from cloudsh.sandbox.firewall import CONTROL_PATH
from tests.cli import ok
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox

BOX = "followbox"
#: Its own security group, so a new address of this machine changes no other test's box.
ENV = {"CLOUDSH_SECURITY_GROUP": "cloudsh-follow-test"}


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[str]:
    ok("launch", BOX, "--type", "t3.micro", env=ENV)
    try:
        yield BOX
    finally:
        sandbox_request(sandbox.settings, CONTROL_PATH, {"address": "127.0.0.1"}, "the address")
        sandbox.ec2().terminate_instances(InstanceIds=[described(sandbox)["InstanceId"]])


def described(sandbox: Sandbox) -> dict[str, Any]:
    """The box as EC2 describes it (straight from the sandbox: no cloudsh listing, which
    would tell cloudsh where the box is)."""
    found = sandbox.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [BOX]}])
    return max((i for r in found["Reservations"] for i in r["Instances"]), key=lambda i: i["LaunchTime"])


def ssh(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(cfg), "-o", "BatchMode=yes", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def configs(box: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`ssh-config` and `ssh-config --wake`, written once while the box runs."""
    where = tmp_path_factory.mktemp("ssh")
    found = {}
    for flags in ((), ("--wake",)):
        found[" ".join(flags)] = cfg = where / f"config{''.join(flags)}"
        ok("ssh-config", *flags, "-o", str(cfg))
    return found


def test_a_warm_connection_loads_little(box: str, configs: dict[str, Path]) -> None:
    """Within a minute of reaching the box, the ProxyCommand asks no cloud and loads no
    `site`, asyncio, boto3 or even `json`, `re`, pathlib or typing: that start-up is
    paid on every `ssh NAME` (bench/proxy_bench.py)."""
    cfg = configs[""]
    r = ssh(cfg, box, "true")  # the box's key confirmed, where it answers remembered
    assert r.returncode == 0, r.stderr
    line = next(x for x in cfg.read_text().splitlines() if x.strip().startswith("ProxyCommand"))
    python, *args = shlex.split(line.split(None, 1)[1].replace("%%", "%"))
    r = subprocess.run([python, "-X", "importtime", *args], input=b"", capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith(b"SSH-2.0-"), r.stderr
    loaded = {x.rsplit("|", 1)[1].strip() for x in r.stderr.decode().splitlines() if x.startswith("import time:")}
    assert "cloudsh.ops.whereabouts" in loaded  # the warm path was taken
    heavy = {"site", "asyncio", "boto3", "botocore", "cloudsh.config", "json", "re", "pathlib", "typing", "socket"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_ssh_follows_the_box_across_stop_start_and_a_new_address(sandbox: Sandbox, box: str, configs: dict[str, Path]) -> None:
    cfg = configs[""]
    block = cfg.read_text().split(f"Host {box}\n", 1)[1].split("\n\n", 1)[0]
    assert "HostName" not in block and "cloudsh/proxy_main.py" in block
    r = ssh(cfg, box, "echo", "first")
    assert (r.returncode, r.stdout) == (0, "first\n"), r.stderr
    before = described(sandbox)["PublicIpAddress"]

    ok("stop", box)
    r = ssh(cfg, box, "true")
    assert r.returncode == 255
    assert f"cloudsh: {box} is stopped. start it with `cloudsh start {box}`" in r.stderr, r.stderr
    ok("start", box)
    assert described(sandbox)["PublicIpAddress"] != before  # EC2 gives a stopped box's public address back
    r = ssh(cfg, box, "echo", "after-start")
    assert (r.returncode, r.stdout) == (0, "after-start\n"), r.stderr

    # This machine moves: the proxy opens the box's group to the new address.
    assert ok("sandbox", "address", "127.0.0.9").strip() == "127.0.0.9"
    r = ssh(cfg, box, "echo", "moved")
    assert (r.returncode, r.stdout) == (0, "moved\n"), r.stderr
    assert "SSH now allowed from 127.0.0.9" in r.stderr


def test_wake_starts_a_stopped_box_and_rsync_goes_through(
    sandbox: Sandbox, box: str, configs: dict[str, Path], tmp_path: Path
) -> None:
    cfg = configs["--wake"]
    # Stopped from elsewhere (the console, another laptop): the address this machine
    # remembers is stale, and the proxy finds out from EC2.
    sandbox.stop(described(sandbox)["InstanceId"])
    r = ssh(cfg, box, "echo", "awake")
    assert (r.returncode, r.stdout) == (0, "awake\n"), r.stderr
    assert f"cloudsh: {box} is stopped: starting it" in r.stderr
    assert described(sandbox)["State"]["Name"] == "running"

    if shutil.which("rsync"):
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "a.txt").write_text("rsync follows")
        r = subprocess.run(
            ["rsync", "-a", "-e", f"ssh -F {cfg} -o BatchMode=yes", f"{tree}/", f"{box}:tree/"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr
        assert ssh(cfg, box, "cat", "tree/sub/a.txt").stdout == "rsync follows"


def test_a_box_that_is_gone_is_one_line_and_255(sandbox: Sandbox, box: str, configs: dict[str, Path]) -> None:
    cfg = configs[""]
    sandbox.ec2().terminate_instances(InstanceIds=[described(sandbox)["InstanceId"]])
    r = ssh(cfg, box, "true")
    assert r.returncode == 255 and "Traceback" not in r.stderr
    said = [line for line in r.stderr.splitlines() if line.startswith("cloudsh:")]
    assert len(said) == 1 and f"{box} (i-" in said[0] and "no longer exists: it is terminated" in said[0], r.stderr
    assert "cloudsh ssh-config" in said[0]

    r = subprocess.run([sys.executable, "-m", "cloudsh.proxy", "--sandbox"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 255 and r.stderr.count("\n") == 1 and "no instance id given" in r.stderr
