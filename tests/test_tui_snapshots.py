"""Snapshots of the real app's screens (pytest-textual-snapshot, Textual pinned exactly).

The data is fixed (records, prices, a spot history, a clock) and fed through the same
messages the workers post, so the pictures change only when the UI does. Update them
after a deliberate UI change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from cloudsh.config import Settings
from cloudsh.models import (
    TAG_MANAGED,
    Image,
    Instance,
    InstanceType,
    Job,
    Price,
    Snapshot,
    SpotPricePoint,
    Volume,
)
from cloudsh.ops.idle import describe
from cloudsh.ops.preview import Loss
from cloudsh.tui.app import CloudshApp
from cloudsh.tui.box import BoxScreen
from cloudsh.tui.handoff import RecordingHandoff
from cloudsh.tui.help import help_sections
from cloudsh.tui.instances import InstancesPane, InstancesTable
from cloudsh.tui.jobs import JobsScreen
from cloudsh.tui.messages import (
    ActivityLogged,
    BackendReady,
    IdleStatusLoaded,
    InstancesLoaded,
    PricesLoaded,
    SpotHistoryLoaded,
    StorageLoaded,
)
from cloudsh.tui.screens import ConfirmScreen, HelpScreen, RegionScreen, ResizeScreen, TunnelsScreen
from cloudsh.tui.state import InstanceRow
from cloudsh.tui.tunnels import OpenTunnel
from cloudsh.tui.volumes import StorageTable
from cloudsh.tui.widgets import PricesTable, StatusBar

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)


def record(name: str, iid: str, itype: str, gpus: str, state: str, market: str, price: float | None,
           uptime: float | None, ip: str | None, image: str = "dlami-nvidia") -> dict[str, Any]:
    return {
        "name": name, "id": iid, "type": itype, "state": state, "market": market, "public_ip": ip,
        "gpus": gpus, "price_per_hour": price, "az": "us-east-1a", "launch_time": None,
        "uptime_s": uptime, "cost_so_far": round(price * uptime / 3600, 4) if price and uptime else None,
        "image_id": "ami-0abc", "spot_request_id": "sir-1" if market == "spot" else None,
        "image_family": image, "gpu_driver": image != "ubuntu-24.04" if gpus else None,
    }


RECORDS = [
    record("dev", "i-0a1b2c3d4e5f60001", "t3.medium", "", "running", "on-demand", 0.0416, 5400, "54.210.1.10",
           "ubuntu-24.04"),
    record("train", "i-0a1b2c3d4e5f60002", "g5.xlarge", "1x A10G", "running", "spot", 0.3118, 12000, "54.210.1.11"),
    record("notebook", "i-0a1b2c3d4e5f60003", "g4dn.xlarge", "1x T4", "stopped", "on-demand", 0.526, None, None),
    record("eval", "i-0a1b2c3d4e5f60004", "g6.xlarge", "1x L4", "pending", "spot", 0.2856, None, None),
]

TYPES = [
    (InstanceType("g4dn.xlarge", 4, 16, 1, "T4", 16), 0.526, 0.1851),
    (InstanceType("g5.xlarge", 4, 16, 1, "A10G", 24), 1.006, 0.3118),
    (InstanceType("g5.2xlarge", 8, 32, 1, "A10G", 24), 1.212, 0.3697),
    (InstanceType("g5.12xlarge", 48, 192, 4, "A10G", 96), 5.672, 1.8718),
    (InstanceType("g6.xlarge", 4, 16, 1, "L4", 24), 0.8048, 0.2856),
    (InstanceType("p3.2xlarge", 8, 61, 1, "V100", 16), 3.06, 0.9180),
    (InstanceType("t3.medium", 2, 4), 0.0416, 0.0125),
    (InstanceType("m5.xlarge", 4, 16), 0.192, 0.0744),
]
SOURCE = "sandbox list prices (us-east-1, 2025-06)"
PRICES = [(t, Price(t.name, od, spot, "us-east-1b", NOW - timedelta(minutes=3), SOURCE)) for t, od, spot in TYPES]
HISTORY = [
    SpotPricePoint("g4dn.xlarge", "us-east-1a", 0.17 + 0.015 * ((h * 7) % 5) / 4, NOW - timedelta(hours=48 - h))
    for h in range(48)
]
VOLUMES = [
    Volume("vol-0001", "dev", 60, "in-use", "us-east-1a", "gp3", "i-0a1b2c3d4e5f60001", "/dev/sda1", True),
    Volume("vol-0002", "train", 200, "in-use", "us-east-1a", "gp3", "i-0a1b2c3d4e5f60002", "/dev/sda1", True),
    Volume("vol-0003", "datasets", 500, "available", "us-east-1a", "gp3"),
]
SNAPSHOTS = [Snapshot("snap-0001", "datasets-nov", "vol-0003", 500, "completed")]
IMAGES = [Image("ami-0f00", "train-frozen-1122", "available", snapshot_ids=("snap-0001",))]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def make_app() -> CloudshApp:
    def no_cloud() -> Any:
        raise AssertionError("snapshot apps never connect")

    return CloudshApp(no_cloud, handoff=RecordingHandoff(), clock=lambda: NOW,
                      auto_connect=False, periodic_refresh=False)


async def seeded(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, CloudshApp)
    for message in (
        BackendReady("SANDBOX"),
        InstancesLoaded(RECORDS, stale=False, fetched_at=NOW),
        PricesLoaded(PRICES, SOURCE, NOW - timedelta(minutes=3)),
        StorageLoaded(VOLUMES, SNAPSHOTS, IMAGES),
        SpotHistoryLoaded("g4dn.xlarge", HISTORY),
        ActivityLogged("> resize notebook g4dn.xlarge --yes", "cmd"),
        ActivityLogged("[  0.4s] changing notebook from t3.medium to g4dn.xlarge", "info"),
        ActivityLogged("✓ resize notebook to g4dn.xlarge done in 1.2s", "done"),
    ):
        # BackendReady would start refreshing: route it by hand without a backend.
        if isinstance(message, BackendReady):
            app.main(StatusBar).mode = message.label
            continue
        app.post_message(message)
    # What the boxes said of their idle stop, as the pane's worker posts it.
    app.main(InstancesPane).post_message(IdleStatusLoaded({RECORDS[0]["id"]: "stops in 42m", RECORDS[1]["id"]: "busy: job +1"}))
    # The tables fill in a worker: wait until every row is drawn.
    instances, prices, storage = app.main(InstancesTable), app.main(PricesTable), app.main(StorageTable)
    for _ in range(200):
        await pilot.pause()
        if (instances.filled and prices.filled and storage.filled and instances.row_count == len(RECORDS)
                and "stops in 42m" in str(instances._drawn.get(RECORDS[0]["id"]))
                and prices.row_count and storage.row_count == len(VOLUMES) + len(SNAPSHOTS) + len(IMAGES)):
            break
    app.main(StatusBar).freshness = "updated 09:30:00"
    await pilot.pause()


def test_main_screen(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 36), run_before=seeded)


def test_main_screen_narrow(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=seeded)


def test_prices_pane_focused_narrow(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=seeded, press=["tab"])


def _with(screen_factory: Any) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        await seeded(pilot)
        await pilot.app.push_screen(screen_factory(pilot.app))
        await pilot.pause()

    return run_before


def test_confirm_terminate(snap_compare: Any) -> None:
    train = Instance("i-0a1b2c3d4e5f60002", "train", "g5.xlarge", "running", "spot", spot_request_id="sir-1",
                     tags={TAG_MANAGED: "1"})  # a box cloudsh launched
    loss = Loss(train, ("train (200 GB)",), (), results_not_home=("train-ae81 (6 files)",), instance_store_gb=250,
                disk_backups=(("root disk train", None),),
                stays=("job train-b2c4 is running, writing ~/out/metrics.csv",))
    question = "Terminate " + loss.describe() + "\nThis cannot be undone. Terminate?"
    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=_with(lambda app: ConfirmScreen(question)))


def test_resize_picker(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(100, 30),
                        run_before=_with(lambda app: ResizeScreen(InstanceRow.from_record(RECORDS[0]), PRICES)))


def test_tunnels_view(snap_compare: Any) -> None:
    def screen(app: CloudshApp) -> TunnelsScreen:
        app.tunnels.tunnels[("train", 8888)] = OpenTunnel("train", 8888, 8888, "open")
        app.tunnels.tunnels[("train", 6006)] = OpenTunnel("train", 6006, 6006, "reconnecting")
        return TunnelsScreen(app.tunnels, "train")

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=_with(screen))


def test_help(snap_compare: Any) -> None:
    # A fixed command list: the registry grows, this picture should not.
    commands = "  launch  Launch a new instance and wait until SSH answers.\n  ls      List instances."

    def screen(app: CloudshApp) -> HelpScreen:
        return HelpScreen([("Everywhere", [(":", "Cmd", "command_line"), ("?", "Help", "help"), ("q", "Quit", "quit")]),
                           ("Instances", [("⏎", "Box view", "box_view"), ("c", "Connect", "connect")]),
                           ("Jobs (J)", [("esc/J", "Back", "jobs_close")])], commands)

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=_with(screen))


def test_help_is_made_of_the_bindings_in_sections_with_readable_keys_each_once() -> None:
    sections = {title: [(k, d) for k, d, _ in keys] for title, keys in help_sections(make_app())}
    assert list(sections)[:3] == ["Everywhere", "Instances", "Box view (enter on a box)"]
    everywhere = dict(sections["Everywhere"])
    assert everywhere[":"] == "Cmd" and everywhere["?"] == "Help" and "colon" not in everywhere
    instances = dict(sections["Instances"])
    assert instances["⏎"] == "Box view" and instances["c"] == "Connect" and instances["/"] == "Filter"
    # The box view repeats none of the pane's keys: only its own are listed.
    assert dict(sections["Box view (enter on a box)"]) == {"esc": "Back", "a": "Copy IP", "y": "Copy ssh",
                                                           "^r": "Reload"}
    assert ("esc/J", "Back") in sections["Jobs (J)"]  # keys for one action share a line
    for keys in sections.values():
        assert len(keys) == len(set(keys)) and len(dict(keys)) == len(keys)


async def test_keys_are_the_users_and_the_theme_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "cloudsh").mkdir()
    (tmp_path / "cloudsh" / "config.toml").write_text('[cloudsh.keys]\nhelp = "H"\njobs = "ctrl+j,G"\n')
    settings = replace(Settings.load(env={}), state_dir=tmp_path / "state")
    assert dict(settings.keys) == {"help": "H", "jobs": "ctrl+j,G"}
    assert dict(Settings.load(env={"CLOUDSH_KEYS": "quit=ctrl+q; connect=C"}).keys) == {"quit": "ctrl+q", "connect": "C"}

    def app() -> CloudshApp:
        return CloudshApp(lambda: None, settings=settings, handoff=RecordingHandoff(), auto_connect=False,  # type: ignore[arg-type,return-value]
                          periodic_refresh=False)

    first = app()
    async with first.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")  # the old key does nothing now
        assert not isinstance(first.screen, HelpScreen)
        await pilot.press("H")
        assert isinstance(first.screen, HelpScreen)
        everywhere = {d: k for k, d, _ in dict(help_sections(first))["Everywhere"]}
        assert (everywhere["Help"], everywhere["Jobs"]) == ("H", "^j/G")  # the help says the user's keys
        await pilot.press("escape")
        first.theme = "nord"  # as the palette's theme chooser does
        await pilot.pause()
    second = app()
    async with second.run_test(size=(100, 30)):
        assert second.theme == "nord"


def test_region_picker(snap_compare: Any) -> None:
    regions = ("eu-west-1", "us-east-1", "us-east-2", "us-west-2")
    assert snap_compare(make_app(), terminal_size=(100, 30),
                        run_before=_with(lambda app: RegionScreen(regions, "us-east-1")))


# -- the jobs view and the Volumes pane's actions ----------------------------------------

JOBS = [
    Job("train-3f2a", "i-0a1b2c3d4e5f60002", "train", "train.py", "running", started=NOW - timedelta(minutes=42),
        runtime_s=2520, remote_dir="out", local_dir="/home/me/results", cost=0.2183,
        last_lines=("epoch 11/40 loss 0.412", "epoch 12/40 loss 0.398", "saved out/ckpt-12.pt")),
    Job("eval-91c0", "i-0a1b2c3d4e5f60001", "dev", "eval.sh", "finished", exit_status=0,
        started=NOW - timedelta(hours=3), runtime_s=610, cost=0.007, last_lines=("accuracy 0.914",)),
    Job("sweep-77de", "i-0a1b2c3d4e5f60002", "train", "sweep.py", "interrupted", started=NOW - timedelta(hours=5),
        runtime_s=3900, runs=1, remote_dir="runs", local_dir="/home/me/runs", cost=0.3378),
]


def test_jobs_view(snap_compare: Any) -> None:
    def screen(app: CloudshApp) -> JobsScreen:
        app.state.jobs.jobs = JOBS
        app.state.jobs.results = {"train-3f2a": (14, 1, "09:29:55"), "sweep-77de": (31, 0, "09:12:03")}
        return JobsScreen()

    assert snap_compare(make_app(), terminal_size=(120, 30), run_before=_with(screen))


async def _volume_row(pilot: Pilot[Any]) -> None:
    await seeded(pilot)
    table = pilot.app.query_one(StorageTable)
    table.focus()
    table.move_cursor(row=2)  # the detached "datasets" volume
    await pilot.pause()


def test_volumes_pane_keys(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 36), run_before=_volume_row)


def test_attach_form(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _volume_row(pilot)
        await pilot.press("a")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=run_before)


# -- the box view ---------------------------------------------------------------------------

SSH = ("ssh -p 22 -l ubuntu -i /home/me/.local/state/cloudsh/id_ed25519 -o HostKeyAlias=i-0a1b2c3d4e5f60002 "
       "-o UserKnownHostsFile=/home/me/.local/state/cloudsh/known_hosts -o StrictHostKeyChecking=yes 54.210.1.11")
BOX = {
    **RECORDS[1], "status": "running", "interrupted": False, "price_note": "", "managed": True, "owner": "me",
    "launch_time": "2026-11-22T06:10:00+00:00", "ssh_port": 22, "vcpus": 4, "memory_gib": 16.0, "state_reason": "",
    "why": "", "private_ip": "172.31.5.20", "ssh_user": "ubuntu", "connect": "cloudsh connect train", "ssh_command": SSH,
    "image": {"id": "ami-0abc", "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20251015",
              "family": "dlami-nvidia"},
    "volumes": [
        {"id": "vol-0002", "name": "train", "size_gb": 200, "type": "gp3", "device": "/dev/sda1", "root": True,
         "mount": "/", "mount_reported": True, "delete_on_termination": True, "per_month": 16.0},
        {"id": "vol-0003", "name": "datasets", "size_gb": 500, "type": "gp3", "device": "/dev/sdf", "root": False,
         "mount": "/mnt/data", "mount_reported": True, "delete_on_termination": False, "per_month": 40.0},
    ],
    "security_groups": ["sg-0c10"],
    "ssh_rules": [
        {"group_id": "sg-0c10", "cidr": "203.0.113.7/32", "description": "cloudsh: this machine (cloudsh-3f2a)",
         "cloudsh": True},
        {"group_id": "sg-0c10", "cidr": "10.0.0.0/8", "description": "office VPN", "cloudsh": False},
    ],
    "tags": {"Name": "train", "cloudsh:managed": "1", "cloudsh:image-family": "dlami-nvidia", "team": "vision",
             "cloudsh:job:train-3f2a": "{}"},
    "jobs": [{"id": "train-3f2a", "state": "running", "script": "train.py", "exit_status": None,
              "started": "2026-11-22T08:48:00+00:00", "runtime_s": 2520, "remote_dir": "out",
              "local_dir": "/home/me/results", "cost": 0.2183}],
    "tunnels": [{"local_port": 8888, "remote_port": 8888, "url": "http://localhost:8888/", "status": "open"}],
    "ipv4_per_hour": 0.005, "storage_per_month": 56.0, "notes": [],
}
IDLE = {"name": "train", "id": BOX["id"], "state": "running", "idle_stop_after_s": 3600.0, "idle_for_s": 0.0,
        "awake_because": ["cloudsh job train-3f2a running", "GPU 0 at 97 %"], "stops_in_s": 3600.0,
        "agent_running": True, "backstop": "CloudWatch stops it after 2 h under 2 % CPU", "warned": False}
BOX["idle"] = {**IDLE, "text": describe(IDLE)}


def test_box_view(snap_compare: Any) -> None:
    def screen(app: CloudshApp) -> BoxScreen:
        # The view follows the app's tunnels: the one the record lists is open in the app.
        app.tunnels.tunnels[("train", 8888)] = OpenTunnel("train", 8888, 8888, "open")
        return BoxScreen(InstanceRow.from_record({**BOX, "jobs": ["train-3f2a"]}), BOX)

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_with(screen))
