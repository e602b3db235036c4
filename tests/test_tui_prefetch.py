"""The app's first listing, fetched by a child forked before Textual loads.

Each case runs tests/prefetch_probe.py as a process of its own (forking is only done
while a process has one thread, as `cloudsh` has at that point).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.cli import ls_json, ok
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox


def probe(mode: str) -> tuple[Any, str]:
    r = subprocess.run(
        [sys.executable, "-m", "tests.prefetch_probe", mode], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, "CLOUDSH_SANDBOX": "1"},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def stable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without what changes between two listings (uptime, cost, state, address,
    and the SSH port a booting box publishes once it answers)."""
    moving = {"uptime_s", "cost_so_far", "state", "status", "public_ip", "ssh_port"}
    return sorted(({k: v for k, v in r.items() if k not in moving} for r in records), key=lambda r: r["id"])


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> str:
    ok("launch", "prefetch-box", "--type", "t3.micro", "--no-wait")
    return "prefetch-box"


def test_child_lists_what_ls_lists_and_keeps_quiet_when_it_fails(box: str) -> None:
    records, _ = probe("records")
    assert stable(records) == stable(ls_json())  # the same command, so the same records
    assert box in {r["name"] for r in records}
    # A child that fails (here: a profile that does not exist) gives nothing and says
    # nothing: its error would land on the app's screen.
    nothing, stderr = probe("fails")
    assert nothing is None
    assert stderr == ""


def test_cancelled_child_is_killed_and_reaped(sandbox: Sandbox) -> None:
    reaped, _ = probe("cancel")
    assert reaped is True


def test_app_paints_the_prefetched_listing_and_does_not_list_twice(box: str) -> None:
    got, _ = probe("app")
    ids = sorted(r["id"] for r in ls_json())
    assert got["ids"] == ids
    # The listing is on screen before the app's own connection is made; once connected,
    # the prices come next, not a second listing.
    assert got["order"][:3] == ["listing", "ready", "prices"], got["order"]
    assert got["reaped"] and not got["child_running_at_ready"]


def test_app_lists_itself_when_the_child_fails(box: str) -> None:
    got, _ = probe("app-fallback")
    assert got["ids"] == sorted(r["id"] for r in ls_json())
    assert got["order"][:3] == ["ready", "listing", "prices"], got["order"]


def test_app_connects_itself_when_the_child_is_stuck(box: str) -> None:
    got, _ = probe("app-slow")
    assert got["child_running_at_ready"]  # connected without waiting for it
    assert got["ids"] == sorted(r["id"] for r in ls_json())
    assert got["order"][:3] == ["ready", "listing", "prices"], got["order"]
    assert got["reaped"]  # the stuck child did not outlive the app
