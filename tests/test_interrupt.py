"""Spot interruptions on the sandbox: the metadata notice, the job reacting, results home,
the box waiting for capacity (never started by the user), and the job resuming at boot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

NOTICE_S = "6"  # longer than the watcher's 5 s poll, as EC2's 2 minutes are

#: Writes out/rN.txt (holding the time it was written) every 0.3 s, checkpointing as it
#: goes; on SIGTERM it notes the time and stops; with CLOUDSH_RESUME=1 it continues.
TRAINER = """#!/bin/bash
mkdir -p out
start=0
if [ "$CLOUDSH_RESUME" = 1 ] && [ -f out/ckpt ]; then start=$(cat out/ckpt); echo "resuming from $start"; fi
trap 'echo "TERM at $(date +%s.%N) marker=$([ -f "$CLOUDSH_INTERRUPT_FILE" ] && echo yes)"; exit 143' TERM
for i in $(seq $start 39); do
  date +%s.%N > out/.r$i.tmp && mv out/.r$i.tmp out/r$i.txt
  echo $((i+1)) > out/ckpt
  echo "step $i"
  sleep 0.3 & wait $!
done
echo finished
"""


def _imds(sandbox: Sandbox) -> str:
    endpoint = sandbox.read().imds_endpoint
    assert endpoint
    return endpoint


def _http(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _state(name: str) -> str:
    return next(str(i["state"]) for i in json.loads(ok("ls", "--json")) if i["name"] == name)


def _wait_state(name: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _state(name) != state:
        assert time.monotonic() < deadline, f"{name} did not become {state}"
        time.sleep(0.2)


def _jobs() -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in json.loads(ok("jobs", "--json"))}


@pytest.fixture(scope="module")
def spot(sandbox: Sandbox) -> Iterator[str]:
    name = f"spot-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3a.micro", "--spot")  # a type of its own: its capacity is played with
    yield name
    cloudsh("terminate", name, "--yes", "--discard-results")


def test_metadata_needs_a_token_and_has_no_notice_by_default(sandbox: Sandbox, spot: str) -> None:
    [inst] = [i for i in json.loads(ok("ls", "--json")) if i["name"] == spot]
    base = f"{_imds(sandbox)}/{inst['id']}"
    assert _http("GET", f"{base}/latest/meta-data/spot/instance-action")[0] == 401
    assert _http("PUT", f"{base}/latest/api/token")[0] == 400  # no TTL header
    status, token = _http("PUT", f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert status == 200 and token
    auth = {"X-aws-ec2-metadata-token": token}
    assert _http("GET", f"{base}/latest/meta-data/spot/instance-action", auth)[0] == 404
    assert _http("GET", f"{base}/latest/meta-data/instance-id", auth) == (200, inst["id"])
    # A token is good for its own instance only.
    assert _http("GET", f"{_imds(sandbox)}/i-0000000000000000/latest/meta-data/instance-id", auth)[0] == 401
    # The box learns where its metadata is.
    assert ok("run", spot, "--", "echo", "$CLOUDSH_IMDS_ENDPOINT").strip() == base


def test_interrupt_refuses_on_demand_boxes(sandbox: Sandbox) -> None:
    name = f"od-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro", "--no-wait")
    try:
        r = cloudsh("sandbox", "interrupt", name)
        assert r.returncode == 2 and "only spot instances are interrupted" in one_line_error(r)
        assert _state(name) == "running"
    finally:
        cloudsh("terminate", name, "--yes")
    r = cloudsh("sandbox", "interrupt", "no-such-box")
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_interrupted_box_waits_for_capacity_and_its_job_resumes_by_itself(spot: str, tmp_path: Path) -> None:
    script = tmp_path / "trainer.sh"
    script.write_text(TRAINER)
    script.chmod(0o755)
    local = tmp_path / "results"
    env = {**os.environ, "CLOUDSH_SANDBOX": "1"}
    follow = subprocess.Popen(
        [sys.executable, "-m", "cloudsh", "script", spot, str(script), "--sync", f"out:{local}", "--follow"],
        cwd=tmp_path, env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not (local / "r3.txt").exists():
            assert time.monotonic() < deadline and follow.poll() is None, "no results came home"
            time.sleep(0.05)
        noticed_at = time.time()
        r = cloudsh("sandbox", "interrupt", spot, env={"CLOUDSH_SANDBOX_NOTICE_S": NOTICE_S})
        assert r.returncode == 0, r.stderr
        assert "spot interruption notice (stop" in r.stdout
        again = cloudsh("sandbox", "interrupt", spot)
        assert again.returncode == 1 and "already has an interruption notice" in one_line_error(again)
        out, err = follow.communicate(timeout=40)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 1, err
    assert "was interrupted" in err and "job resume" in err
    job_id = out.splitlines()[0]
    term = [line for line in out.splitlines() if line.startswith("TERM at ")]
    assert term and term[0].endswith("marker=yes"), out
    reaction_s = float(term[0].split()[2]) - noticed_at
    assert reaction_s < 10, f"the job heard of the notice after {reaction_s:.1f} s"

    _wait_state(spot, "stopped")
    [rec] = [i for i in json.loads(ok("ls", "--json")) if i["name"] == spot]
    assert rec["interrupted"] and rec["status"].startswith("interrupted: EC2 restarts it when capacity returns (waiting ")
    # `show` says why it waits and what else there is, with its interrupted job.
    shown = json.loads(ok("show", spot, "--json"))
    assert shown["interrupted"] and shown["status"].startswith("interrupted: EC2 restarts it when capacity returns")
    assert f"cloudsh relaunch {spot}" in shown["why"] and shown["ssh_command"] is None
    assert [j["state"] for j in shown["jobs"] if j["id"] == job_id] == ["interrupted"]
    home = {p.name: p.read_text() for p in local.glob("r*.txt")}
    written_before_notice = {n for n, t in home.items() if float(t) < noticed_at}
    assert written_before_notice and len(home) >= 4

    # Only EC2 starts it again: `start` says why, and what else there is.
    r = cloudsh("start", spot)
    line = one_line_error(r)
    assert r.returncode == 1 and "interrupted: EC2 restarts it when capacity returns" in line
    assert f"cloudsh relaunch {spot}" in line
    try:
        # Capacity returns: EC2 (the sandbox) restarts the box, and the box's supervisor
        # resumes the job at boot with CLOUDSH_RESUME=1, with nothing asked from here.
        ok("sandbox", "capacity", rec["type"], rec["az"], "1")
        _wait_state(spot, "running")
        deadline = time.monotonic() + 60
        while _jobs()[job_id]["state"] != "finished":
            assert time.monotonic() < deadline, "the job did not resume and finish by itself"
            time.sleep(0.5)
    finally:
        ok("sandbox", "capacity", rec["type"], rec["az"], "-1")
    log = ok("logs", job_id)
    assert "resuming with CLOUDSH_RESUME=1" in log and "resuming from " in log and "finished" in log
    # The next front end that runs brings every result home.
    ok("ls")
    assert sorted(p.name for p in local.glob("r*.txt")) == sorted(f"r{i}.txt" for i in range(40))
    job = _jobs()[job_id]
    assert job["state"] == "finished" and job["exit_status"] == 0 and job["runs"] == 2
