"""The Volumes pane's actions and the jobs view, driven with Pilot on the real sandbox.

Assertions are on what EC2 reports afterwards and on files arriving locally.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message
from textual.widgets import OptionList, RichLog

from cloudsh.models import Image, Volume
from cloudsh.tui.app import CloudshApp
from cloudsh.tui.box import BoxScreen
from cloudsh.tui.handoff import RecordingHandoff
from cloudsh.tui.instances import InstancesTable
from cloudsh.tui.jobs import JobsScreen
from cloudsh.tui.messages import BackendReady
from cloudsh.tui.screens import ConfirmScreen
from cloudsh.tui.tunnels import OpenTunnel
from cloudsh.tui.volumes import StorageForm, StorageTable, VolumesPane
from tests.cli import cloudsh, ok
from tests.sandbox_fixture import Sandbox
from tests.test_tui import factory, finished, highlight, type_command, until

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[str]:
    name = f"tuil-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    yield name
    cloudsh("terminate", name, "--yes")


def _volume(sb: Sandbox, name: str) -> dict[str, Any] | None:
    found = sb.ec2().describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
    return found[0] if found else None


async def _highlight_storage(pilot: Any, app: CloudshApp, name: str, kind: type = Volume) -> None:
    pane = app.query_one(VolumesPane)
    await until(pilot, lambda: any(isinstance(i, kind) and i.name == name for i in pane.items.values()), timeout=30)
    table = app.query_one(StorageTable)
    table.focus()
    # An image's snapshots carry its name too: pick by kind.
    key = next(k for k, i in pane.items.items() if isinstance(i, kind) and i.name == name)
    await until(pilot, lambda: table.filled and key in table.keys)
    table.move_cursor(row=table.keys.index(key))
    await pilot.pause()
    assert isinstance(pane.highlighted(), kind) and getattr(pane.highlighted(), "name", None) == name


async def test_attach_detach_delete_a_volume_from_the_volumes_pane(sandbox: Sandbox, box: str) -> None:
    vol = f"tuiv-{uuid.uuid4().hex[:6]}"
    ok("volume", "create", vol, "2", "--for", box)
    box_id = next(
        i["InstanceId"]
        for r in sandbox.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [box]}])["Reservations"]
        for i in r["Instances"] if i["State"]["Name"] == "running"
    )
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: any(isinstance(m, BackendReady) for m in messages))
        await _highlight_storage(pilot, app, vol)
        # Keys follow the row: a detached volume can be attached, not detached.
        assert app.query_one(VolumesPane).check_action("volume_attach", ()) is True
        assert app.query_one(VolumesPane).check_action("volume_detach", ()) is False
        assert app.query_one(VolumesPane).check_action("image_launch", ()) is False

        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, StorageForm))
        form = app.screen
        assert isinstance(form, StorageForm) and form.choices is not None
        ids = [key for key, _ in form.choices]
        assert box in ids  # running boxes of the volume's AZ
        form.query_one(OptionList).highlighted = ids.index(box)
        await pilot.press("enter")  # picks the box, moves to the mount field
        await pilot.press("enter")  # no mount dir: attach only
        await until(pilot, lambda: bool(finished(messages, f"attach {vol}")), timeout=30)
        [done] = finished(messages, f"attach {vol}")
        assert done.error is None, done.error
        attached = _volume(sandbox, vol)
        assert attached is not None and attached["State"] == "in-use"
        assert attached["Attachments"][0]["InstanceId"] == box_id

        # The pane reloads after the action; then `d` detaches.
        pane = app.query_one(VolumesPane)
        await until(pilot, lambda: any(isinstance(i, Volume) and i.name == vol and i.attached_to for i in pane.items.values()))
        await _highlight_storage(pilot, app, vol)
        assert app.query_one(VolumesPane).check_action("volume_detach", ()) is True
        await pilot.press("d")
        await until(pilot, lambda: bool(finished(messages, f"detach {vol}")), timeout=30)
        [done] = finished(messages, f"detach {vol}")
        assert done.error is None, done.error
        assert (_volume(sandbox, vol) or {}).get("State") == "available"

        # `x` asks first (the command's own question), then deletes.
        await until(pilot, lambda: any(isinstance(i, Volume) and i.name == vol and not i.attached_to for i in pane.items.values()))
        await _highlight_storage(pilot, app, vol)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert vol in app.screen.question and "cannot be undone" in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("y")
        await until(pilot, lambda: bool(finished(messages, f"delete volume {vol}")), timeout=30)
        [done] = finished(messages, f"delete volume {vol}")
        assert done.error is None, done.error
    assert _volume(sandbox, vol) is None


SCRIPT = """#!/bin/bash
mkdir -p out
echo "result $RANDOM" > out/result.txt
echo "wrote the result"
for i in $(seq 400); do sleep 0.1; done
"""


async def test_jobs_view_shows_a_job_and_its_results_come_home(sandbox: Sandbox, box: str, tmp_path: Path) -> None:
    script = tmp_path / "tuijob.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    local = tmp_path / "results"
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: any(isinstance(m, BackendReady) for m in messages))
        await until(pilot, lambda: bool(app.state.rows))
        await type_command(pilot, f"script {box} {script} --sync out:{local}")
        await until(pilot, lambda: bool(finished(messages, f"script {box}")), timeout=30)
        [done] = finished(messages, f"script {box}")
        assert done.error is None, done.error

        await pilot.press("J")
        await until(pilot, lambda: isinstance(app.screen, JobsScreen))
        view = app.screen
        assert isinstance(view, JobsScreen)
        await until(pilot, lambda: any(j.script == "tuijob.sh" and j.state == "running" for j in view.jobs), timeout=30)
        job = next(j for j in view.jobs if j.script == "tuijob.sh")
        # Pulled home by the app itself while the job runs: no `sync` was typed.
        started = time.monotonic()
        await until(pilot, lambda: (local / "result.txt").exists(), timeout=30)
        pulled_s = time.monotonic() - started
        assert (local / "result.txt").read_text().startswith("result ")
        assert not any(f"sync {job.id}" in getattr(m, "label", "") for m in messages)
        view.query_one("DataTable").move_cursor(row=view._shown.index(job.id))  # type: ignore[attr-defined]
        await until(pilot, lambda: "wrote the result" in "\n".join(s.text for s in view.query_one(RichLog).lines))
        await until(pilot, lambda: "copied" in str(view.query_one("DataTable").get_cell(job.id, "results")))  # type: ignore[attr-defined]

        # `s` stops it, after the command's own question.
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: bool(finished(messages, f"stop job {job.id}")), timeout=30)
        [done] = finished(messages, f"stop job {job.id}")
        assert done.error is None, done.error
        await until(pilot, lambda: any(j.id == job.id and j.state == "stopped" for j in view.jobs), timeout=30)
    print(f"result file home {pulled_s:.1f}s after the job showed as running")


async def test_snapshot_a_volume_then_restore_and_delete_the_snapshot(sandbox: Sandbox, box: str) -> None:
    vol, copy = f"tuis-{uuid.uuid4().hex[:6]}", f"tuic-{uuid.uuid4().hex[:6]}"
    ok("volume", "create", vol, "1", "--for", box)
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await until(pilot, lambda: bool(app.state.rows))
        await _highlight_storage(pilot, app, vol)
        await pilot.press("n")
        await until(pilot, lambda: bool(finished(messages, f"snapshot {vol}")), timeout=30)
        [done] = finished(messages, f"snapshot {vol}")
        assert done.error is None, done.error
        vol_id = (_volume(sandbox, vol) or {})["VolumeId"]
        [snap] = sandbox.ec2().describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol_id]}])["Snapshots"]

        pane = app.query_one(VolumesPane)
        await until(pilot, lambda: snap["SnapshotId"] in pane.items, timeout=30)
        table = app.query_one(StorageTable)
        await until(pilot, lambda: table.filled and snap["SnapshotId"] in table.keys)
        table.focus()
        table.move_cursor(row=table.keys.index(snap["SnapshotId"]))
        await pilot.pause()
        assert app.query_one(VolumesPane).check_action("snapshot_restore", ()) is True and app.query_one(VolumesPane).check_action("volume_attach", ()) is False
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, StorageForm))
        form = app.screen
        assert isinstance(form, StorageForm) and form.choices
        form.query_one(OptionList).highlighted = [k for k, _ in form.choices].index(f"box:{box}")
        form.query_one("#form-name").value = copy  # type: ignore[attr-defined]
        await pilot.press("enter")  # the list: on to the name field
        await pilot.press("enter")
        await until(pilot, lambda: bool(finished(messages, f"volume {copy}")), timeout=30)
        [done] = finished(messages, f"volume {copy}")
        assert done.error is None, done.error
        restored = _volume(sandbox, copy)
        assert restored is not None and restored["SnapshotId"] == snap["SnapshotId"]

        await until(pilot, lambda: copy in {getattr(i, "name", "") for i in pane.items.values()}, timeout=30)
        table.focus()
        table.move_cursor(row=table.get_row_index(snap["SnapshotId"]))
        await pilot.pause()
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: bool(finished(messages, "delete snapshot")), timeout=30)
        assert finished(messages, "delete snapshot")[0].error is None
    left = sandbox.ec2().describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vol_id]}])["Snapshots"]
    assert left == []
    cloudsh("volume", "delete", vol, "--yes")
    cloudsh("volume", "delete", copy, "--yes")


async def test_launch_from_an_image_then_delete_it(sandbox: Sandbox, box: str) -> None:
    image, thawed = f"tuii-{uuid.uuid4().hex[:6]}", f"tuit-{uuid.uuid4().hex[:6]}"
    ok("freeze", box, image, "--no-reboot")
    [img] = sandbox.ec2().describe_images(Filters=[{"Name": "name", "Values": [image]}])["Images"]
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=RecordingHandoff())
    try:
        async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
            await until(pilot, lambda: bool(app.state.rows))
            await _highlight_storage(pilot, app, image, Image)
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, StorageForm))
            app.screen.query_one("#form-name").value = thawed  # type: ignore[attr-defined]
            app.screen.query_one("#form-type").value = "t3.micro"  # type: ignore[attr-defined]
            await pilot.press("enter")
            await until(pilot, lambda: bool(finished(messages, f"launch {thawed}")), timeout=40)
            [done] = finished(messages, f"launch {thawed}")
            assert done.error is None, done.error
            found = sandbox.ec2().describe_instances(Filters=[{"Name": "tag:Name", "Values": [thawed]}])
            [inst] = [i for r in found["Reservations"] for i in r["Instances"]]
            assert inst["ImageId"] == img["ImageId"] and inst["State"]["Name"] == "running"

            await _highlight_storage(pilot, app, image, Image)
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = app.screen.question  # type: ignore[attr-defined]
            assert image in question and "frees $" in question  # the storage it frees
            await pilot.press("y")
            await until(pilot, lambda: bool(finished(messages, f"delete image {image}")), timeout=30)
            [done] = finished(messages, f"delete image {image}")
            assert done.error is None, done.error
        assert sandbox.ec2().describe_images(Filters=[{"Name": "name", "Values": [image]}])["Images"] == []
    finally:
        cloudsh("terminate", thawed, "--yes")


async def test_enter_opens_the_box_view_whose_keys_act_on_the_box_and_escape_returns(sandbox: Sandbox, box: str) -> None:
    handoff = RecordingHandoff()
    messages: list[Message] = []
    app = CloudshApp(factory, handoff=handoff, periodic_refresh=False)
    async with app.run_test(size=(120, 40), message_hook=messages.append) as pilot:
        await highlight(pilot, app, box)
        await pilot.press("enter")
        view = app.screen
        assert isinstance(view, BoxScreen)
        await until(pilot, lambda: view.record is not None, timeout=30)  # loaded in a worker
        rec = view.record
        assert rec is not None and rec["name"] == box and rec["tunnels"] == []  # the app opened none to it
        assert [v["mount"] for v in rec["volumes"] if v["root"]] == ["/"] and rec["ssh_command"]
        # One key each copies the address and the ssh command, and says so.
        await pilot.press("a")
        assert app.clipboard == rec["public_ip"]
        await pilot.press("y")
        assert app.clipboard == rec["ssh_command"]
        assert any(f"copied ssh command of {box}" in n.message for n in app._notifications)
        # The Instances pane's keys act on the box on view.
        await pilot.press("c")
        await until(pilot, lambda: bool(finished(messages, f"connect {box}")))
        assert finished(messages, f"connect {box}")[0].error is None and len(handoff.runs) == 1
        # The app's tunnels to the box show in the view as they change (listed as the
        # tunnels view lists them; no listener needed for that).
        app.tunnels.tunnels[(box, 6006)] = OpenTunnel(box, 6006, 6006, "reconnecting")
        await until(pilot, lambda: [(t["url"], t["status"]) for t in (view.record or {}).get("tunnels", ())]
                    == [("http://localhost:6006/", "reconnecting")])
        del app.tunnels.tunnels[(box, 6006)]
        await pilot.press("escape")
        assert not isinstance(app.screen, BoxScreen) and app.query_one(InstancesTable).has_focus
