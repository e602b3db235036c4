"""Two front ends at once on one name or one box: one wins, the other says why, and the
cloud holds what one of them alone would have made."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.cli import by_name, cloudsh, ok
from tests.sandbox_fixture import Sandbox

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
        assert len(_live(sandbox, "twin")) == 1
    finally:
        cloudsh("terminate", "twin", "--yes")


def test_two_resizes_of_one_box_one_wins(sandbox: Sandbox) -> None:
    ok("launch", "sizebox", "--type", "t3.micro", "--no-wait")
    try:
        ok("stop", "sizebox", "--yes")
        results = _together(["resize", "sizebox", "t3.small", "--yes"], ["resize", "sizebox", "t3.medium", "--yes"])
        won = [r for r in results if r.returncode == 0]
        lost = [r for r in results if r.returncode != 0]
        assert len(won) == 1 and len(lost) == 1, [r.stderr for r in results]
        line = _error(lost[0])
        assert lost[0].returncode == 1 and "sizebox" in line and ("busy" in line or "changed since" in line), line
        rec = by_name("sizebox")
        assert rec is not None and rec["type"] == won[0].args[2]
        # The claim is gone once the winner is done: the next resize goes ahead.
        ok("resize", "sizebox", "t3.micro", "--yes")
        assert [t for t in _live(sandbox, "sizebox")[0].get("Tags", []) if t["Key"] == "cloudsh:busy"] == []
    finally:
        cloudsh("terminate", "sizebox", "--yes")
