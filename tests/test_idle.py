"""The idle stop on a sandbox box, through the real `cloudsh`: a busy process and a busy
Jupyter kernel keep the box up, a terminal hears the warning, then the box stops itself
and EC2 says `stopped`; the CloudWatch backstop comes with the idle stop and goes with
the box; `show` says all of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cloudsh.config import Settings
from cloudsh.sandbox import tools
from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

AFTER_S = 2


def _idle(name: str) -> dict[str, Any]:
    return json.loads(ok("idle", name, "--json"))  # type: ignore[no-any-return]


def _alarms(sandbox: Sandbox) -> list[dict[str, Any]]:
    import boto3

    env = sandbox.env
    cw = boto3.client("cloudwatch", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return list(cw.describe_alarms()["MetricAlarms"])


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[tuple[str, str]]:
    """(name, id) of a box launched with its idle stop off."""
    name = f"idle-{uuid.uuid4().hex[:6]}"
    r = cloudsh("launch", name, "--type", "t3.micro", "--idle-stop", "off")
    assert r.returncode == 0, r.stderr
    assert f"{name}: idle stop off" in r.stderr  # announced in one line
    yield name, r.stdout.split()[1]
    cloudsh("terminate", name, "--yes")


def test_bad_input_is_one_line_and_changes_nothing(box: tuple[str, str]) -> None:
    r = cloudsh("idle", box[0], "soon")
    assert r.returncode == 2 and "not an idle time" in one_line_error(r)
    r = cloudsh("launch", f"never-{uuid.uuid4().hex[:6]}", "--idle-stop", "0s")
    assert r.returncode == 2 and "not an idle time" in one_line_error(r)


async def test_busy_box_stays_up_then_idle_box_stops_after_warning(sandbox: Sandbox, box: tuple[str, str]) -> None:
    name, iid = box
    conn = await sandbox.connect(sandbox.box(iid), client_keys=[str(Settings.load().key_path)])
    async with conn:
        # A terminal left open, never typed in: it does not keep the box up past AFTER, and hears the warning.
        terminal = await conn.create_process(term_type="xterm")
        # A CPU loop (as in a tmux window) and a Jupyter server whose kernel is busy.
        await conn.run("cat > jupyter_server.py", input=tools.source("jupyter_server"), check=True)
        await conn.run("setsid nohup sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"
                       " setsid nohup python3 jupyter_server.py --kernel python3:busy </dev/null >/dev/null 2>&1 &"
                       " for i in $(seq 50); do ls ~/.local/share/jupyter/runtime/jpserver-*.json && exit 0;"
                       " sleep 0.1; done; exit 1", check=True)
        assert f"stops itself after {AFTER_S} s idle" in cloudsh("idle", name, f"{AFTER_S}s").stderr
        alarm = next(a for a in _alarms(sandbox) if a["Dimensions"] == [{"Name": "InstanceId", "Value": iid}])
        assert alarm["AlarmActions"][0].endswith(":ec2:stop") and alarm["Threshold"] == 2.0
        assert alarm["Period"] * alarm["EvaluationPeriods"] > AFTER_S
        await asyncio.sleep(AFTER_S + 1)
        rec = _idle(name)
        assert rec["state"] == "running" and rec["idle_stop_after_s"] == AFTER_S
        awake = "; ".join(rec["awake_because"])
        assert "busy at" in awake and "jupyter kernel python3 busy" in awake, awake
        assert "ssh session" not in awake  # the open terminal no longer counts
        # `show` says the same, in the words of `idle NAME`.
        shown = json.loads(ok("show", name, "--json"))["idle"]
        assert shown["idle_stop_after_s"] == AFTER_S and "jupyter kernel python3 busy" in "; ".join(shown["awake_because"])
        text = ok("show", name)
        assert f"Idle stop\n  {name}: " in text and f"; stops {AFTER_S} s after the last of these" in text
        await conn.run("pkill -f '[w]hile :'; pkill -f '[j]upyter_server.py'", check=False)
        heard = ""
        deadline = time.monotonic() + 4 * AFTER_S + 10
        while "stops in" not in heard:
            assert time.monotonic() < deadline, f"no warning reached the terminal: {heard!r}"
            with contextlib.suppress(TimeoutError):
                heard += await asyncio.wait_for(terminal.stdout.read(4096), 1)
        assert f"cloudsh idle {name} 2h" in heard
    sandbox.ec2().get_waiter("instance_stopped").wait(
        InstanceIds=[iid], WaiterConfig={"Delay": 0.5, "MaxAttempts": 40})
    assert sandbox.ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped"


def test_backstop_goes_with_the_box(sandbox: Sandbox, box: tuple[str, str]) -> None:
    name, iid = box
    assert any(a["AlarmName"].endswith(iid) for a in _alarms(sandbox))
    shown = json.loads(ok("show", name, "--json"))["idle"]  # stopped: nothing asked over SSH
    assert shown["state"] == "stopped" and shown["backstop"].startswith("CloudWatch stops it after")
    ok("terminate", name, "--yes")
    assert not any(a["AlarmName"].endswith(iid) for a in _alarms(sandbox))
