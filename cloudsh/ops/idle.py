"""A box's idle stop: the agent on the box (`cloudsh.agents.idle`), its CloudWatch
backstop (`services.alarms`), and why the box is awake.

The agent is copied to `~/.cloudsh/idle/agent.py` at each change (it is small), told its
settings, and started; cron starts it again at each boot. On the sandbox the same agent
runs, and its `sudo shutdown -h now` reaches the daemon through the box's stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

from cloudsh import agents
from cloudsh.errors import CloudshError, UsageError
from cloudsh.models import HostInfo, Instance
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.reach import ssh_host
from cloudsh.services.alarms import Alarms
from cloudsh.services.backend import Backend

AGENT_DIR = ".cloudsh/idle"  # under the login user's home, on the box
AGENT = f"{AGENT_DIR}/agent.py"
#: The agent checks every minute at most, more often for a short AFTER (the sandbox's `5s`).
MAX_INTERVAL_S = 60.0
#: The warning comes this long before the stop (a quarter of a short AFTER).
WARN_S = 600.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_after(text: str) -> float | None:
    """`45m`, `90s`, `2h`, `1d` (a bare number is minutes) in seconds; `off` is None."""
    if text.strip().lower() == "off":
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text.strip().lower())
    seconds = float(m.group(1)) * _UNITS[m.group(2) or "m"] if m else 0.0
    if not 0 < seconds <= 7 * 86400:
        raise UsageError(f"{text!r} is not an idle time", "give one like 45m, 90s or 2h (at most 7d), or off")
    return seconds


def span(seconds: float) -> str:
    """`2 s`, `1 h`, `1 min 30 s`; from ten minutes on, to the minute (`59 min`, `2 h 5 min`)."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s < 600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    m = round(s / 60)
    return f"{m} min" if m < 120 else f"{m // 60} h" + (f" {m % 60} min" if m % 60 else "")


def agent_settings(after_s: float | None, *, name: str, gpu: bool, keep_alive: list[str] | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"after_s": after_s, "name": name, "gpu": gpu}
    if after_s is not None:
        doc["interval_s"] = min(MAX_INTERVAL_S, max(1.0, after_s / 10))
        doc["warn_s"] = min(WARN_S, after_s / 4)
    if keep_alive is not None:
        doc["keep_alive"] = keep_alive
    return doc


async def set_idle_stop(
    backend: Backend, inst: Instance, after_s: float | None, *, keep_alive: list[str] | None = None,
    progress: Progress = quiet,
) -> str:
    """Install (or turn off) the box's idle stop and its alarm; one line saying what is set."""
    host = await ssh_host(backend, inst, stopped_hint=f"start it with `cloudsh start {inst.label}` first")
    itype = await backend.ec2.instance_type(inst.type)
    doc = agent_settings(after_s, name=inst.label, gpu=itype.gpu_count > 0, keep_alive=keep_alive)
    cmd = (f"mkdir -p {AGENT_DIR} && cat > {AGENT_DIR}/.agent.py.$$ && mv {AGENT_DIR}/.agent.py.$$ {AGENT} "
           f"&& python3 {AGENT} configure {shlex.quote(json.dumps(doc))}")
    result = await backend.ssh.run(host, cmd, stdin=agents.source("idle"), timeout=30)
    if not result.ok:
        why = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1]
        raise CloudshError(f"cannot set the idle stop on {inst.label}: {why}", "check that the box has python3")
    note = await _backstop(backend, inst, after_s)
    if after_s is None:
        return f"{inst.label}: idle stop off{note}"
    return f"{inst.label} stops itself after {span(after_s)} idle{note}"


async def _backstop(backend: Backend, inst: Instance, after_s: float | None) -> str:
    """Put or delete the alarm; a refusal (no CloudWatch permission) is said, not fatal."""
    alarms = Alarms(backend.clients, backend.ec2.region)
    try:
        if after_s is None:
            await alarms.delete_stop_alarms([inst.id])
            return ""
        alarm = await alarms.put_stop_alarm(inst.id, after_s)
    except CloudshError as exc:
        return f" (no CloudWatch backstop: {exc.message})"
    return f"; backstop: CloudWatch stops it after {span(alarm.window_s)} under 2 % CPU"


async def delete_backstops(backend: Backend, insts: list[Instance]) -> None:
    """The terminated boxes' alarms go with them (a missing alarm is no error)."""
    try:
        await Alarms(backend.clients, backend.ec2.region).delete_stop_alarms([i.id for i in insts])
    except CloudshError as exc:
        backend.tell(f"could not delete the idle alarms of {', '.join(i.label for i in insts)}: {exc.message}")


async def idle_report(
    backend: Backend, inst: Instance, *, host: HostInfo | None = None, backstop: bool = True
) -> dict[str, Any]:
    """Why the box is awake and when it stops: the agent's last check. JSON keys as
    CONTRACT.md: `idle_stop_after_s`, `idle_for_s`, `awake_because`. `host`: where the
    caller already reached the box; `backstop=False` leaves out the CloudWatch alarm."""
    rec: dict[str, Any] = {"name": inst.label, "id": inst.id, "state": inst.state, "idle_stop_after_s": None,
                           "idle_for_s": None, "awake_because": [], "stops_in_s": None, "agent_running": False,
                           "backstop": None, "warned": False}
    alarm = None
    try:
        alarm = await Alarms(backend.clients, backend.ec2.region).stop_alarm(inst.id) if backstop else None
    except CloudshError as exc:
        rec["backstop"] = f"unknown ({exc.message})"
    if alarm is not None:
        rec["backstop"] = f"CloudWatch stops it after {span(alarm.window_s)} under {alarm.threshold:g} % CPU"
    if inst.state != "running":
        return rec
    host = host or await ssh_host(backend, inst)
    result = await backend.ssh.run(host, f"test -f {AGENT} && python3 {AGENT} status || echo '{{}}'", timeout=30)
    try:
        st = dict(json.loads(result.stdout or "{}"))
    except ValueError:
        raise CloudshError(f"the idle agent on {inst.label} gave no answer", "set it again with `cloudsh idle NAME 60m`") from None
    after = st.get("after_s")
    rec["agent_running"] = bool(st.get("running"))
    rec["keep_alive"] = list(st.get("keep_alive", []))
    if after is None or not rec["agent_running"]:
        rec["idle_stop_after_s"] = after if rec["agent_running"] else None
        return rec
    rec["idle_stop_after_s"] = after
    rec["awake_because"] = list(st.get("awake_because", []))
    if "stops_at" in st:
        now = float(st.get("now", 0))
        rec["idle_for_s"] = round(max(0.0, now - (float(st["stops_at"]) - after)), 1)
        rec["stops_in_s"] = round(max(0.0, float(st["stops_at"]) - now), 1)
    rec["warned"] = "warned_at" in st and rec["idle_for_s"] is not None and rec["idle_for_s"] > 0
    return rec


def describe(rec: dict[str, Any]) -> list[str]:
    """`idle NAME` in words."""
    name, after = rec["name"], rec["idle_stop_after_s"]
    if rec["state"] != "running":
        lines = [f"{name} is {rec['state']}"]
    elif after is None:
        lines = [f"{name}: idle stop off (`cloudsh idle {name} 60m` turns it on)"]
    else:
        awake = "; ".join(rec["awake_because"]) or "nothing keeps it awake"
        lines = [f"{name}: {awake}; stops {span(after)} after the last of these"]
        if rec["warned"]:
            lines.append(f"WARNING: {name} stops in {span(rec['stops_in_s'] or 0)}; its terminals were told (`cloudsh idle {name} 2h` keeps it up)")
        elif rec["stops_in_s"] is not None:
            lines.append(f"idle for {span(rec['idle_for_s'] or 0)}; stops in {span(rec['stops_in_s'])} "
                         f"unless used (`cloudsh idle {name} 2h` snoozes)")
    if rec.get("keep_alive"):
        lines.append("keep-alive: " + ", ".join(rec["keep_alive"]))
    if rec["backstop"]:
        lines.append(f"backstop: {rec['backstop']}")
    return lines


def brief(seconds: float) -> str:
    """A span in one short word: `45s`, `42m`, `2h05m`."""
    s = int(seconds)
    if s < 90:
        return f"{s}s"
    return f"{s // 60}m" if s < 5400 else f"{s // 3600}h{s % 3600 // 60:02d}m"


#: What keeps a box awake, in one word, by how the agent's reason begins.
_AWAKE_WORDS = {"ssh": "ssh", "cloudsh": "job", "jupyter": "jupyter", "GPU": "gpu"}


def short(rec: dict[str, Any]) -> str:
    """`idle_report` in a few characters, for the app's Instances pane: `stops in 42m`,
    `off`, `busy: jupyter` (`+1` for each other reason), `?` before the agent's first check."""
    if rec["state"] != "running":
        return "-"
    if rec["idle_stop_after_s"] is None:
        return "off"
    awake: list[str] = rec["awake_because"]
    if awake:
        words = awake[0].split()
        what = _AWAKE_WORDS.get(words[0], "")
        if words[0] == "process":
            what = "keep-alive" if "keep-alive" in awake[0] else words[1]
        return f"busy: {what or words[0]}" + (f" +{len(awake) - 1}" if len(awake) > 1 else "")
    return f"stops in {brief(rec['stops_in_s'])}" if rec["stops_in_s"] is not None else "?"


async def idle_column(backend: Backend, ids: Sequence[str]) -> dict[str, str]:
    """`short` for each of these boxes (one DescribeInstances, then one SSH round trip per
    running box, at once); `?` for a box that could not say."""

    async def one(inst: Instance) -> str:
        try:
            return short(await idle_report(backend, inst, backstop=False))
        except CloudshError:
            return "?"

    insts = await backend.ec2.list_instances(ids=ids)
    return dict(zip((i.id for i in insts), await asyncio.gather(*(one(i) for i in insts)), strict=True))
