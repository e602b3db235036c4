"""The Python API on the sandbox: every verb, readable reprs, the paramiko hand-out,
async twins, the price gate, and CloudshErrors (never raw boto3/asyncssh ones)."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudsh.api import Cloud, Instance, InstanceList, Table, TunnelHandle
from cloudsh.config import Settings
from cloudsh.errors import CloudshError, ConfirmationRefused, InvalidState, NotFound, UsageError
from cloudsh.ops.tunnels import TunnelClosed, TunnelEvent, TunnelLost, TunnelOpened
from tests.cli import ok
from tests.sandbox_fixture import serve_http

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def cloud() -> Iterator[Cloud]:
    c = Cloud(sandbox=True)
    yield c
    c.close()


@pytest.fixture(scope="module")
def box(cloud: Cloud) -> Iterator[Instance]:
    b = cloud.launch("apibox", "t3.micro")
    yield b
    b.terminate()


def test_listing_lookup_and_reprs(cloud: Cloud, box: Instance) -> None:
    assert repr(cloud) == "<Cloud SANDBOX>" and cloud.sandbox
    boxes = cloud.instances()
    assert isinstance(boxes, InstanceList) and box in boxes
    text = repr(boxes)
    assert text.splitlines()[0].split() == ["NAME", "ID", "TYPE", "STATE", "MARKET", "PUBLIC", "IP"]
    assert "apibox" in text and box.id in text
    assert cloud["apibox"] == box and cloud.instance(box.id) == box
    assert box.name == "apibox" and box.state == "running" and box.type == "t3.micro"
    assert repr(box).startswith(f"<Instance apibox {box.id} t3.micro on-demand running")
    assert "apibox" in cloud._ipython_key_completions_() and "apibox" in cloud
    shown = box.show()  # what `cloudsh show apibox --json` gives
    assert (shown["id"], shown["name"], shown["state"]) == (box.id, "apibox", "running")
    assert any(v["root"] and v["mount"] == "/" for v in shown["volumes"]), shown["volumes"]


def test_missing_names_and_bad_arguments_are_cloudsh_errors(cloud: Cloud, box: Instance) -> None:
    with pytest.raises(NotFound, match="no instance named 'apibxo'.*did you mean apibox"):
        cloud["apibxo"]
    with pytest.raises(NotFound):
        cloud.run("nothing-here", "true")
    with pytest.raises(NotFound):
        cloud.instance("i-00000000000000000")
    with pytest.raises(UsageError, match="unknown instance type"):
        cloud.launch("x", "t3.nonesuch")
    with pytest.raises(UsageError, match="already exists"):
        cloud.launch("apibox")
    with pytest.raises(UsageError):
        box.put("/no/such/file", "/tmp/x")
    with pytest.raises(CloudshError):
        box.get("/no/such/remote/file", "/tmp/never")


def test_run_put_get(box: Instance, cloud: Cloud, tmp_path: Path) -> None:
    r = box.run("echo out; echo err >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_status) == ("out\n", "err\n", 3)
    assert cloud.run("apibox", "uname -s").stdout.strip() == "Linux"
    src = tmp_path / "weights.txt"
    src.write_text("hello from the api\n")
    box.put(src, "weights.txt")
    assert box.run("cat weights.txt").stdout == "hello from the api\n"
    cloud.get("apibox", "weights.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "hello from the api\n"


def test_paramiko_hand_out(box: Instance) -> None:
    client = box.ssh()
    try:
        _, stdout, _ = client.exec_command("echo paramiko-$((6*7))")
        assert stdout.read().decode() == "paramiko-42\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()


def test_tunnel_handle(box: Instance) -> None:
    assert box.run(serve_http(8890, HELLO)).exit_status == 0  # a server on the box
    with box.tunnel(0, 8890) as t:
        assert isinstance(t, TunnelHandle) and t.url.startswith("http://localhost:")
        assert urllib.request.urlopen(t.url, timeout=10).read() == HELLO.encode()
        assert "open" in repr(t)
    assert t.closed and "closed" in repr(t)


HELLO = "hello through the tunnel"


def test_prices_table(cloud: Cloud) -> None:
    rows = cloud.prices(family="g5")
    assert isinstance(rows, Table) and rows
    assert {r["type"].split(".")[0] for r in rows} == {"g5"}
    first = next(r for r in rows if r["type"] == "g5.xlarge")
    assert first["gpus"] == "1x A10G" and first["on_demand"] > 0
    assert repr(rows).splitlines()[0].startswith("TYPE")
    assert all(r["gpus"] for r in cloud.prices(gpu=True, family=["g5", "t3"]))
    assert cloud.price("g5.xlarge").on_demand == first["on_demand"]
    assert cloud.instance_type("g5.xlarge").gpu_count == 1
    assert "Host apibox" in cloud.ssh_config()


def test_prices_say_why_they_are_missing() -> None:
    from cloudsh.root import build_backend
    from cloudsh.sandbox import state as sbx
    from cloudsh.sandbox.control import sandbox_up
    from cloudsh.services.aws import AwsTarget
    from tests.faults import DroppingProxy, ec2_error

    # An identity without ec2:DescribeSpotPriceHistory, played at the edge by a proxy that
    # answers that call as EC2 does for a denied one.
    def deny_spot(request: bytes) -> bytes | None:
        if b"Action=DescribeSpotPriceHistory" in request:
            return ec2_error("UnauthorizedOperation", "You are not authorized to perform this operation.", 403)
        return None

    settings = Settings.load()
    proxy = DroppingProxy(sandbox_up(settings).endpoint, fail=deny_spot)
    target = AwsTarget(
        region=sbx.REGION, endpoint_url=proxy.url, access_key_id=sbx.ACCESS_KEY_ID,
        secret_access_key=sbx.SECRET_ACCESS_KEY, sandbox=True,
    )
    cloud = Cloud(backend=build_backend(settings, target))
    try:
        rows = cloud.prices(family="g5")
        assert rows and all(r["spot"] is None for r in rows)
        assert next(r for r in rows if r["type"] == "g5.xlarge")["on_demand"] == 1.006
        assert rows.note.startswith("spot prices unavailable: not allowed to call DescribeSpotPriceHistory")
        assert "ec2:DescribeSpotPriceHistory" in rows.note
        assert all(rows.note in r["note"] for r in rows)
        assert repr(rows).splitlines()[-1] == rows.note
        assert cloud.price("g5.xlarge").note == rows.note
        # A type with no price at all says why, not just that it has none.
        with pytest.raises(CloudshError, match="no price known for t3.nano: not in the sandbox's list") as info:
            cloud.price("t3.nano")
        assert "ec2:DescribeSpotPriceHistory" in str(info.value)
    finally:
        cloud.close()
        proxy.close()


def test_lifecycle_stop_resize_start_terminate(cloud: Cloud) -> None:
    b = cloud.launch("apicycle", "t3.micro", wait=False)
    pricey = Cloud(sandbox=True, settings=dataclasses.replace(Settings.load(), confirm_above_per_hour=0.5))
    try:
        assert b.stop().state == "stopped"
        with pytest.raises(InvalidState, match="stopped, not running"):
            b.run("true")
        # Above the price threshold the API cannot ask: it refuses, naming the $/h and the way on.
        with pytest.raises(ConfirmationRefused, match=r"\$1.006/h g5.xlarge .*pass confirm_price=True"):
            pricey.resize("apicycle", "g5.xlarge")
        with pytest.raises(ConfirmationRefused, match=r"above your \$1/h threshold.*max_per_hour= at least"):
            pricey.resize("apicycle", "g5.xlarge", max_per_hour=1)
        with pytest.raises(ConfirmationRefused, match=r"refusing to launch a \$1.006/h"):
            pricey.launch("apipricey", "g5.xlarge", wait=False)
        assert "apipricey" not in cloud.instances().names() and b.refresh().type == "t3.micro"
        assert pricey.resize("apicycle", "g5.xlarge", max_per_hour=1.5).type == "g5.xlarge"
        assert b.start().state == "running"
        # Resized while stopped: nothing could install the driver plain Ubuntu lacks.
        assert b.run("nvidia-smi -L").exit_status == 127
        b.run("echo carried > ~/kept.txt")
        old_id = b.id
        with pytest.raises(ConfirmationRefused, match=r"relaunch as"):
            pricey.instance("apicycle").relaunch()
        assert b.relaunch(type="t3.micro").id != old_id  # a new box of the old one's disk
        assert (b.name, b.type, b.run("cat kept.txt").stdout) == ("apicycle", "t3.micro", "carried\n")
        assert cloud.instance(old_id).state in ("shutting-down", "terminated")
    finally:
        pricey.close()
        cloud.terminate("apicycle")
    assert b.refresh().state in ("shutting-down", "terminated")
    _until(lambda: b.refresh().state == "terminated", 20, "EC2 to finish shutting it down")
    assert "apicycle" not in cloud.instances().names()


async def test_async_twins(box: Instance) -> None:
    # Async code uses its own loop; the twins run there (a fresh Cloud: its own connections).
    c = Cloud(sandbox=True)
    try:
        found = await c.ainstance("apibox")
        assert found == box
        assert (await found.arun("echo twin")).stdout == "twin\n"
        assert "apibox" in (await c.ainstances()).names()
        with pytest.raises(NotFound):
            await c.ainstance("no-such-box")
    finally:
        await c.backend.close()


def test_listings_of_volumes_snapshots_and_images(cloud: Cloud, box: Instance) -> None:
    vols = cloud.volumes()
    assert isinstance(vols, Table)
    assert repr(vols) == "(none)" or repr(vols).startswith("NAME")
    assert isinstance(cloud.snapshots(), Table) and isinstance(cloud.images(), Table)


def test_start_brings_results_home_as_the_command_does(cloud: Cloud, tmp_path: Path) -> None:
    b = cloud.launch("apijobs", "t3.micro")
    try:
        script = tmp_path / "write.sh"
        script.write_text("#!/bin/bash\nmkdir -p out\nfor i in 1 2 3; do echo $i > out/f$i.txt; done\n")
        script.chmod(0o755)
        local = tmp_path / "home"
        job_id = ok("script", "apijobs", str(script), "--sync", f"out:{local}").strip()
        _until(lambda: _job_state(job_id) == "finished", 20, "the job to finish")
        assert not list(local.glob("f*.txt"))  # nothing followed or synced it yet
        assert b.stop().state == "stopped"
        assert b.start().state == "running"
        assert sorted(p.name for p in local.glob("f*.txt")) == ["f1.txt", "f2.txt", "f3.txt"]
        assert (local / "f2.txt").read_text() == "2\n"
        # terminate brings home what a finished job wrote, and refuses to lose a running one.
        script.write_text("#!/bin/bash\nmkdir -p out\necho 4 > out/f4.txt\n")
        more = ok("script", "apijobs", str(script), "--sync", f"out:{local}").strip()
        _until(lambda: _job_state(more) == "finished", 20, "the second job to finish")
        script.write_text("#!/bin/bash\nsleep 600\n")
        running = ok("script", "apijobs", str(script), "--sync", f"out:{tmp_path / 'later'}").strip()
        with pytest.raises(ConfirmationRefused, match=rf"refusing to terminate apijobs: .*{running}.*discard_results=True"):
            b.terminate()
        assert (local / "f4.txt").read_text() == "4\n" and b.refresh().state == "running"
    finally:
        b.terminate(discard_results=True)


def test_tunnel_reconnects_after_its_box_stops_and_starts(cloud: Cloud) -> None:
    b = cloud.launch("apitunnel", "t3.micro")
    seen: list[TunnelEvent] = []
    try:
        assert b.run(serve_http(8890, HELLO)).exit_status == 0  # a server on the box
        with b.tunnel(0, 8890, on_event=seen.append) as t:
            port = t.local_port
            assert urllib.request.urlopen(t.url, timeout=10).read() == HELLO.encode()
            b.stop()
            _until(lambda: t.state == "reconnecting", 20, "the tunnel to notice its box stopped")
            b.start()
            _until(lambda: t.state == "open", 30, "the tunnel to reopen")
            assert t.local_port == port and t.url == f"http://localhost:{port}/"
            # Stopping ended the box's processes; its server starts again, at a new address.
            assert b.run(serve_http(8890, HELLO)).exit_status == 0
            assert urllib.request.urlopen(t.url, timeout=10).read() == HELLO.encode()
        kinds = [type(e) for e in seen]
        assert kinds[0] is TunnelOpened and TunnelLost in kinds
        assert any(isinstance(e, TunnelOpened) and e.again and e.local == port for e in seen)
        _until(lambda: t.state == "closed", 10, "the tunnel to close")
        assert isinstance(seen[-1], TunnelClosed)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        b.terminate()


def test_a_tunnel_to_a_terminated_box_ends_saying_why(cloud: Cloud) -> None:
    b = cloud.launch("apitunnel-gone", "t3.micro")
    t = b.tunnel(0, 9)
    port = t.local_port
    b.terminate()
    _until(lambda: t.state == "closed", 30, "the tunnel to give up")
    last = t.events[-1]
    assert isinstance(last, TunnelClosed) and ("terminated" in last.reason or "shutting-down" in last.reason)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _job_state(job_id: str) -> str:
    jobs = json.loads(ok("jobs", "--json"))
    return next((str(j["state"]) for j in jobs if j["id"] == job_id), "")


def _until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
