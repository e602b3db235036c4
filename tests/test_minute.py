"""The TUI, the REPL and a CLI loop on one sandbox at the same time for a minute, each
doing real work in a loop, acting on the same boxes: no front end shows an error or a
traceback, nothing reaches the crash log, the app still answers keys, and the cloud
holds no duplicate: one box per name, no volume left over, one key pair, one group.

Mostly waiting: each loop pauses between commands, so the minute costs little CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pexpect
import pytest

from cloudsh.config import Settings
from tests.cli import cloudsh
from tests.sandbox_fixture import Sandbox
from tests.test_repl import PROMPT, spawn
from tests.tmux import command, kill, send, start_app, wait_for, wait_gone

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.early,  # ~70 s of mostly waiting: started first, beside the rest of the suite
    pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux"),
]

#: How long the three front ends work side by side (the issue asks for a minute).
DURATION_S = 60.0
#: Pause between two commands of one loop: the loops wait more than they work.
PAUSE_S = 1.0
#: What a front end must never show.
BAD = ("Traceback", "unexpected error", "✗", "cannot refresh", "(exit status")


class Loop(threading.Thread):
    """One front end's loop: `step(i)` until the minute is up; any exception is kept."""

    def __init__(self, name: str, step: Callable[[int], None], until: float) -> None:
        super().__init__(name=name, daemon=True)
        self.step, self.until = step, until
        self.errors: list[str] = []
        self.rounds = 0

    def run(self) -> None:
        try:
            while time.monotonic() < self.until:
                self.step(self.rounds)
                self.rounds += 1
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(exc).__name__}: {exc}")


def bad_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if line.lstrip().startswith("cloudsh: ") or any(b in line for b in BAD)]


def test_tui_repl_and_cli_for_a_minute(sandbox: Sandbox) -> None:
    p = f"mn{uuid.uuid4().hex[:4]}"
    up, cycle = f"{p}-up", f"{p}-cyc"  # up: every front end runs on it; cycle: stopped and started
    crash_log = Settings.load().state_dir / "crash.log"
    crashes_before = crash_log.read_text() if crash_log.exists() else ""
    ec2 = sandbox.ec2()
    volumes_before = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    # The two boxes are launched at once (they race for the key pair and the group).
    launches = [subprocess.Popen([sys.executable, "-m", "cloudsh", "launch", name, "--type", "t3.micro"],
                                 env={**os.environ, "CLOUDSH_SANDBOX": "1"},
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name in (up, cycle)]
    session = f"cloudsh-minute-{uuid.uuid4().hex[:6]}"
    repl: pexpect.spawn | None = None
    try:
        start_app(session)
        repl = spawn()
        for launch in launches:
            _, err = launch.communicate(timeout=120)
            assert launch.returncode == 0, err
        loops, seen = _side_by_side(p, session, repl)
        assert not any(loop.is_alive() for loop in loops), "a front end is stuck"
        assert {loop.name: loop.errors for loop in loops} == {"tui": [], "repl": [], "cli": []}
        assert all(loop.rounds >= 2 for loop in loops), {loop.name: loop.rounds for loop in loops}
        assert seen == {"tui": [], "repl": [], "cli": []}

        # The app still answers: its help opens and closes, and it quits cleanly.
        send(session, "?")
        wait_for(session, "Next / previous pane")
        send(session, "Escape")
        wait_gone(session, "Next / previous pane")
        send(session, "q")
        wait_for(session, "TUI-EXIT=0")
        repl.sendline("exit")
        repl.expect(pexpect.EOF)

        # No duplicates in the cloud: one box per name, no volume left, one key pair, one group.
        instances = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        live = [i for i in instances
                if _name(i).startswith(p) and i["State"]["Name"] not in ("terminated", "shutting-down")]
        assert Counter(_name(i) for i in live) == {up: 1, cycle: 1}, live
        # Every volume made since is gone but the two boxes' roots.
        left = [v for v in ec2.describe_volumes()["Volumes"] if v["VolumeId"] not in volumes_before]
        roots = {i["BlockDeviceMappings"][0]["Ebs"]["VolumeId"] for i in live}
        assert {v["VolumeId"] for v in left} == roots, left
        pairs = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("cloudsh-")]
        assert len(pairs) == 1, pairs
        groups = Counter((g["VpcId"], g["GroupName"]) for g in ec2.describe_security_groups()["SecurityGroups"])
        assert all(n == 1 for n in groups.values()), groups
    finally:
        kill(session)
        if repl is not None:
            repl.close(force=True)
        cloudsh("terminate", up, cycle, "--yes")
    crashes = crash_log.read_text() if crash_log.exists() else ""
    assert crashes == crashes_before, crashes[len(crashes_before):][-3000:]


def _side_by_side(p: str, session: str, repl: pexpect.spawn) -> tuple[list[Loop], dict[str, list[str]]]:
    """The three loops for DURATION_S; what each showed that it should not have."""
    up, cycle = f"{p}-up", f"{p}-cyc"
    seen: dict[str, list[str]] = {"tui": [], "repl": [], "cli": []}

    def tui(i: int) -> None:
        box = f"{p}-t{i}"
        for line in (f"launch {box} --type t3.micro", f"run {up} -- echo tui-{i}", f"start {cycle} {box}",
                     f"terminate {box} --yes"):
            command(session, line)
            seen["tui"] += bad_lines(wait_for(session, f"{line} done", timeout=120))
            time.sleep(PAUSE_S)

    def repl_step(i: int) -> None:
        box, vol = f"{p}-r{i}", f"{p}-rv{i}"
        lines = ((f"launch {box} --type t3.micro", f"run {up} -- echo repl-{i}", "ls", f"terminate {box} --yes")
                 if i % 2 else
                 (f"volume create {vol} 1 --for {up}", f"volume attach {vol} {up}", f"start {cycle}", f"show {cycle}",
                  f"volume detach {vol}", f"volume delete {vol} --yes"))
        for line in lines:
            repl.sendline(line)
            if line.startswith("run "):
                repl.expect_exact(f"repl-{i}\r\n", timeout=120)  # the box ran it
            repl.expect_exact(PROMPT, timeout=120)
            seen["repl"] += [f"{line}: {b}" for b in bad_lines(repl.before)]
            time.sleep(PAUSE_S)

    def cli(i: int) -> None:
        vol = f"{p}-cv{i}"
        steps = ((("stop", cycle), ("ls", "--json"), ("start", cycle), ("run", up, "--", f"echo cli-{i}"))
                 if i % 2 else
                 (("volume", "create", vol, "1", "--for", up), ("volume", "attach", vol, up), ("show", up),
                  ("volume", "detach", vol), ("volume", "delete", vol, "--yes")))
        for args in steps:
            r = cloudsh(*args, timeout=120)
            if r.returncode != 0 or bad_lines(r.stderr) or (args[0] == "run" and r.stdout != f"cli-{i}\n"):
                seen["cli"].append(f"{' '.join(args)} -> {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
            time.sleep(PAUSE_S)

    until = time.monotonic() + DURATION_S
    loops = [Loop("tui", tui, until), Loop("repl", repl_step, until), Loop("cli", cli, until)]
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join(timeout=DURATION_S + 240)
    return loops, seen


def _name(resource: dict[str, Any]) -> str:
    return next((t["Value"] for t in resource.get("Tags", []) if t["Key"] == "Name"), "")
