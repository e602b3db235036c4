"""The app's state and decisions (`cloudsh.tui.state`), tested without Textual."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from cloudsh.commands.complete import complete
from cloudsh.models import InstanceType, Job, Price, Snapshot, Volume
from cloudsh.tui.state import (
    FAST_REFRESH_S,
    IDLE_BATCH,
    IDLE_REFRESH_S,
    IDLE_RETRY_S,
    IDLE_STATUS_S,
    JOBS_ACTIVE_S,
    JOBS_IDLE_S,
    AppState,
    BoxState,
    Connection,
    IdleColumn,
    InstanceRow,
    JobsPoll,
    Phase,
    RefreshSchedule,
)


def record(name: str, iid: str, state: str = "running", jobs: tuple[str, ...] = (), **kw: Any) -> dict[str, Any]:
    return {"name": name, "id": iid, "type": "t3.micro", "state": state, "market": "on-demand", "public_ip": None,
            "gpus": "", "price_per_hour": 0.0104, "az": "us-east-1a", "uptime_s": 60, "cost_so_far": 0.0002,
            "jobs": list(jobs), **kw}


def test_the_state_module_imports_no_textual() -> None:
    code = "import sys, cloudsh.tui.state; print(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rows_are_typed_records_of_the_listing() -> None:
    row = InstanceRow.from_record(record("dev", "i-1", "stopping"))
    assert row.state is BoxState.STOPPING and row.state.transitional and row.state == "stopping"
    assert row.label == "dev" and row.jobs == ()
    # A listing cached by an older version has no `jobs` key.
    old = record("", "i-2")
    del old["jobs"]
    assert InstanceRow.from_record(old).label == "i-2"


def test_refreshes_coalesce_and_back_off_while_idle() -> None:
    s = RefreshSchedule()
    assert s.start() is True
    assert s.start() is False and s.start() is False  # asked for twice while running: one more run
    assert s.finished() is True
    assert s.start() is True
    assert s.finished() is False
    delays = [s.plan(100.0, changing=False) for _ in range(len(IDLE_REFRESH_S) + 1)]
    assert delays == [*IDLE_REFRESH_S, IDLE_REFRESH_S[-1]]
    assert s.plan(100.0, changing=True) == FAST_REFRESH_S and s.idle_step == 0
    s.busy = 1
    assert s.plan(100.0, changing=False) == FAST_REFRESH_S


def test_the_tick_says_when_a_refresh_is_due() -> None:
    s = RefreshSchedule()
    s.plan(0.0, changing=False)
    assert s.next_at == IDLE_REFRESH_S[0]
    assert s.tick(1.0) is False
    s.busy = 1  # a command started: its effect should show soon, not in 10 s
    assert s.tick(1.0) is False and s.next_at == 1.0 + FAST_REFRESH_S
    assert s.tick(1.0 + FAST_REFRESH_S) is True and s.next_at is None
    assert s.tick(100.0) is False  # nothing planned until the refresh ends


def test_connection_lifecycle() -> None:
    c = Connection()
    assert c.phase is Phase.CONNECTING and c.backend is None
    c.failed("no credentials")
    assert c.phase is Phase.FAILED and c.error == "no credentials"

    class FakeBackend:
        label = "SANDBOX"

    c.ready(FakeBackend())  # type: ignore[arg-type]
    assert c.phase is Phase.READY and c.label == "SANDBOX" and c.error == ""
    c.failed("region switch refused")  # the backend it had still works
    assert c.phase is Phase.READY and c.backend is not None


def test_jobs_poll_waits_for_the_cloud_and_reports_an_error_once() -> None:
    p = JobsPoll()
    assert p.start(0.0, ready=False, force=True) is False and p.due == 0.0
    assert p.start(0.0, ready=True) is True
    assert p.start(0.0, ready=True, force=True) is False  # one poll at a time
    p.done(10.0, active=True, watching=False)
    assert p.due == 10.0 + JOBS_ACTIVE_S and not p.polling
    assert p.start(11.0, ready=True) is False
    assert p.start(11.0, ready=True, force=True) is True
    p.done(20.0, active=False, watching=False)
    assert p.due == 20.0 + JOBS_IDLE_S
    assert p.failed("box unreachable") is True
    assert p.failed("box unreachable") is False
    p.succeeded()
    assert p.failed("box unreachable") is True
    p.synced([("j1", 3, 1)], "09:00:00")
    p.synced([("j1", 2, 0)], "09:00:05")
    assert p.results["j1"] == (5, 0, "09:00:05")
    p.jobs = [Job("j1", "i-1", "dev", "a.py", "running"), Job("j2", "i-1", "dev", "b.py", "finished")]
    assert p.active_ids() == {"j1"}


def test_a_cached_listing_never_replaces_a_fresh_one() -> None:
    s = AppState(stale=True)
    assert s.take_listing([record("old", "i-1")], stale=True)
    assert s.take_listing([record("new", "i-2")], stale=False)
    assert not s.stale and s.fresh_seen
    assert not s.take_listing([record("old", "i-1")], stale=True)
    assert [r.name for r in s.rows] == ["new"]


def test_the_completion_index_comes_from_what_the_panes_hold() -> None:
    s = AppState()
    s.take_listing([record("dev", "i-1", jobs=("train-3f2a",)), record("eval", "i-2", "pending")], stale=False)
    s.take_prices([(InstanceType("g5.xlarge", 4, 16, 1, "A10G", 24), Price("g5.xlarge", 1.006))])
    s.take_storage([Volume("vol-1", "data", 10, "available", "us-east-1a", "gp3")],
                   [Snapshot("snap-1", "nov", "vol-1", 10, "completed")], [])
    idx = s.index
    assert idx.instances == ("dev", "i-1", "eval", "i-2")
    assert idx.jobs == ("train-3f2a",) and idx.details["train-3f2a"] == "job on dev"
    assert idx.types == ("g5.xlarge",) and idx.families == ("g5",)
    assert idx.volumes == ("data", "vol-1") and idx.snapshots == ("nov", "snap-1")
    assert [c.text for c in complete("logs ", None, idx)] == ["train-3f2a "]
    assert s.changing() and s.names() == {"i-1": "dev", "i-2": "eval"}
    s.forget_listing()
    assert s.index.instances == () and s.index.volumes == ("data", "vol-1")


def test_an_interrupted_spot_box_says_why_it_waits() -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from cloudsh.models import Instance
    from cloudsh.ops.records import instance_record

    now = datetime.now(UTC)
    inst = Instance("i-9", "sp", "t3.micro", "stopped", market="spot", state_reason="Server.SpotInstanceShutdown",
                    state_since=now - timedelta(minutes=12))
    rec = instance_record(inst, {}, {}, now)
    assert rec["state"] == "stopped" and rec["interrupted"]
    assert rec["status"] == "interrupted: EC2 restarts it when capacity returns (waiting 12m00s)"
    row = InstanceRow.from_record(rec)
    assert row.interrupted and row.status == rec["status"]
    # Stopped by its user, or on-demand: plainly stopped.
    for other in (replace(inst, state_reason="Client.UserInitiatedShutdown"), replace(inst, market="on-demand")):
        assert (instance_record(other, {}, {}, now)["status"], other.interrupted) == ("stopped", False)


def test_the_idle_column_asks_running_boxes_once_a_minute_in_batches() -> None:
    rows = [InstanceRow.from_record(record(f"b{n}", f"i-{n}")) for n in range(IDLE_BATCH + 2)]
    stopped = InstanceRow.from_record(record("s", "i-s", "stopped"))
    foreign = InstanceRow.from_record(record("f", "i-f", managed=False))
    col = IdleColumn()
    assert [col.text(r) for r in (rows[0], stopped, foreign)] == ["…", "-", "-"]
    first = col.due([*rows, stopped, foreign], 0.0)
    assert first == [r.id for r in rows[:IDLE_BATCH]]  # never a stopped box, nor another's
    assert col.due(rows, 1.0) == []  # one round at a time
    col.took({first[0]: "busy: jupyter"}, 1.0)
    assert col.text(rows[0]) == "busy: jupyter"
    assert col.due(rows, 2.0) == [r.id for r in rows[1:IDLE_BATCH + 1]]  # the rest, the answered one not again
    col.took({}, 2.0)
    assert rows[0].id in col.due(rows, 1.0 + IDLE_STATUS_S)  # a minute later
    col.took({rows[1].id: "?"}, 62.0)  # could not say (booting): asked again soon
    assert col.due(rows[1:2], 62.0 + IDLE_RETRY_S - 1) == [] and col.due(rows[1:2], 62.0 + IDLE_RETRY_S) == [rows[1].id]
    col.took({}, 73.0)
    gone = InstanceRow.from_record(record("b0", rows[0].id, "stopped"))
    col.due([gone], 63.0)
    assert col.text(rows[0]) == "…"  # once it runs again, asked afresh
