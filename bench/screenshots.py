"""`make screenshots`: the real app on a freshly seeded sandbox, saved as SVG in screenshots/.

Seeds a private sandbox (a CPU box, a GPU spot box, a stopped GPU box, a data volume),
starts a job on the GPU box, then drives the app with Textual's Pilot and saves the main
screen, the resize picker, the terminate confirmation, the tunnels view, the jobs view, the
box view and the 80x24 layout.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, bench_sandbox

OUT = ROOT / "screenshots"

SEED = (
    ("launch", "dev", "--type", "t3.medium"),
    ("launch", "train", "--type", "g5.xlarge", "--spot"),
    ("launch", "notebook", "--type", "g4dn.xlarge"),
    ("stop", "notebook"),
)


async def seed(env: dict[str, str]) -> None:
    import boto3

    from cloudsh.commands.registry import Context, dispatch
    from cloudsh.frontend import GlobalOptions, backend_factory
    from cloudsh.tui.demo import _Quiet

    backend = backend_factory(GlobalOptions(sandbox=True))()
    ctx = Context(out=_Quiet(), backend_factory=lambda: backend, _backend=backend)
    for words in SEED:
        await dispatch(ctx, list(words))
    await dispatch(ctx, ["script", "train", str(_train_script()), "--sync", f"out:{JOB_DIR / 'results'}"])
    await backend.close()
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"])
    ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=500, VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "datasets"}]}],
    )


JOB_DIR = Path(tempfile.mkdtemp(prefix="cloudsh-shots-"))
TRAIN = """#!/bin/bash
mkdir -p out
for i in 1 2 3 4 5 6; do
  echo "epoch $i/40 loss 0.$((90 - i * 7))"
  echo "checkpoint $i" > out/ckpt-$i.txt
done
sleep 600
"""


def _train_script() -> Path:
    path = JOB_DIR / "train.sh"
    path.write_text(TRAIN)
    path.chmod(0o755)
    return path


async def shoot(name: str, size: tuple[int, int], then: Callable[[Any, Any], Awaitable[None]] | None = None) -> Path:
    from cloudsh.frontend import GlobalOptions, backend_factory
    from cloudsh.tui.app import CloudshApp
    from cloudsh.tui.handoff import RecordingHandoff
    from cloudsh.tui.instances import InstancesTable

    app = CloudshApp(backend_factory(GlobalOptions(sandbox=True)), handoff=RecordingHandoff(), periodic_refresh=False)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 30
        while not (app.state.rows and app.state.price_rows and app._spot_cache) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        await pilot.pause(0.5)
        train = next(r.id for r in app.state.rows if r.name == "train")
        table = app.main(InstancesTable)
        while not (table.filled and train in table.keys) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        table.move_cursor(row=table.keys.index(train))
        await pilot.pause()
        if then is not None:
            await then(app, pilot)
        await pilot.pause(0.3)
        path = OUT / f"{name}.svg"
        app.save_screenshot(filename=path.name, path=str(OUT))
    return path


async def _resize(app: Any, pilot: Any) -> None:
    await pilot.press("r")


async def _terminate(app: Any, pilot: Any) -> None:
    await pilot.press("x")
    await pilot.pause(1.0)


async def _tunnels(app: Any, pilot: Any) -> None:
    from cloudsh.tui.tunnels import OpenTunnel

    # Shown as the view lists them; the picture needs no real listener on the box.
    app.tunnels.tunnels[("train", 8888)] = OpenTunnel("train", 8888, 8888, "open")
    app.tunnels.tunnels[("train", 6006)] = OpenTunnel("train", 6006, 6006, "open")
    await pilot.press("T")


async def _jobs(app: Any, pilot: Any) -> None:
    await pilot.press("J")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (app.state.jobs.jobs and app.state.jobs.results):
        await pilot.pause(0.2)
    await pilot.pause(1.0)  # the highlighted job's log


async def _box(app: Any, pilot: Any) -> None:
    from cloudsh.tui.box import BoxScreen

    await pilot.press("enter")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (isinstance(app.screen, BoxScreen) and app.screen.record):
        await pilot.pause(0.2)


async def _ls(app: Any, pilot: Any) -> None:
    await pilot.press("colon")
    app.query_one("#command-line").value = "ls"
    await pilot.press("enter")
    await pilot.pause(1.0)


def main() -> list[Path]:
    OUT.mkdir(exist_ok=True)
    with bench_sandbox() as env:
        asyncio.run(seed(env))
        shots = [
            asyncio.run(shoot("main", (120, 36), _ls)),
            asyncio.run(shoot("resize", (120, 36), _resize)),
            asyncio.run(shoot("terminate", (120, 36), _terminate)),
            asyncio.run(shoot("tunnels", (120, 36), _tunnels)),
            asyncio.run(shoot("jobs", (120, 36), _jobs)),
            asyncio.run(shoot("box", (120, 36), _box)),
            asyncio.run(shoot("narrow-80x24", (80, 24))),
        ]
    shutil.rmtree(JOB_DIR, ignore_errors=True)
    for path in shots:
        print(path.relative_to(ROOT))
    return shots


if __name__ == "__main__":
    main()
