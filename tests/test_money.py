"""Money, through the real binary on a private sandbox: `cost --json` adds up (a spot box
at its own AZ's price), a budget crossing is said once, `launch` and `resize` above the
price threshold are refused without a terminal before anything changes, and `orphans`
finds each kind while `orphans clean --yes` removes exactly those."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli import cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox, own_sandbox

SPOT_AZ = "us-east-1b"
FAR = "eu-west-1"  # the second region orphans are swept in


def _until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@dataclass
class World:
    sb: Sandbox
    stopped: str  # a box that is stopped: nothing it uses is an orphan
    spot: str  # a running spot box in SPOT_AZ, launched from `kept_image`
    kept: dict[str, str]  # what must survive `orphans clean`, by kind
    orphans: set[tuple[str, str]]  # (kind, id) of what must go


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with own_sandbox(tmp_path_factory.mktemp("money")) as sb:
        yield _build(sb)


def _build(sb: Sandbox) -> World:
    ec2 = sb.ec2()

    def settle() -> None:
        sb.past_window(time.monotonic())

    def state(iid: str) -> str:
        return str(ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"])

    def image_ready(image_id: str) -> bool:
        return bool(ec2.describe_images(ImageIds=[image_id])["Images"][0]["State"] == "available")

    ec2.create_key_pair(KeyName="cloudsh-used", TagSpecifications=[_made("key-pair")])
    ec2.create_key_pair(KeyName="cloudsh-orphan-key", TagSpecifications=[_made("key-pair")])
    ec2.create_key_pair(KeyName="cloudsh-lookalike")  # a name like cloudsh's, but not made by it
    sg_used = ec2.create_security_group(GroupName="cloudsh-used-sg", Description="used",
                                        TagSpecifications=[_made("security-group")])["GroupId"]
    sg_orphan = ec2.create_security_group(GroupName="cloudsh-orphan-sg", Description="unused",
                                          TagSpecifications=[_made("security-group")])["GroupId"]
    settle()
    [box] = ec2.run_instances(ImageId=sb.ubuntu_image(), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                              KeyName="cloudsh-used", SecurityGroupIds=[sg_used, sb.ssh_group],
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": "Name", "Value": "money-box"}, {"Key": "cloudsh:managed", "Value": "1"}]}],
                              )["Instances"]
    stopped, az = box["InstanceId"], box["Placement"]["AvailabilityZone"]
    settle()
    _until("the box to run", lambda: state(stopped) == "running")
    ec2.stop_instances(InstanceIds=[stopped])
    _until("the box to stop", lambda: state(stopped) == "stopped")
    root = box["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    kept_snap = ec2.create_snapshot(VolumeId=root)["SnapshotId"]
    kept_image = ec2.create_image(InstanceId=stopped, Name="money-kept")["ImageId"]
    orphan_image = ec2.create_image(InstanceId=stopped, Name="money-orphan")["ImageId"]
    orphan_vol = ec2.create_volume(AvailabilityZone=az, Size=5)["VolumeId"]
    gone_vol = ec2.create_volume(AvailabilityZone=az, Size=3)["VolumeId"]
    settle()
    orphan_snap = ec2.create_snapshot(VolumeId=gone_vol)["SnapshotId"]
    settle()
    _until("the snapshot", lambda: ec2.describe_snapshots(SnapshotIds=[orphan_snap])["Snapshots"][0]["State"] == "completed")
    ec2.delete_volume(VolumeId=gone_vol)
    _until("the images", lambda: image_ready(kept_image) and image_ready(orphan_image))
    [spot] = ec2.run_instances(
        ImageId=kept_image, InstanceType="t3.micro", MinCount=1, MaxCount=1, KeyName="cloudsh-used",
        SecurityGroupIds=[sb.ssh_group], Placement={"AvailabilityZone": SPOT_AZ},
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
    )["Instances"]
    orphan_eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    kept_eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    settle()
    _until("the spot box to run", lambda: state(spot["InstanceId"]) == "running")
    ec2.associate_address(AllocationId=kept_eip, InstanceId=spot["InstanceId"])
    return World(
        sb, stopped, spot["InstanceId"],
        {"volume": root, "snapshot": kept_snap, "image": kept_image, "elastic-ip": kept_eip,
         "key-pair": "cloudsh-used", "security-group": sg_used},
        {("volume", orphan_vol), ("snapshot", orphan_snap), ("image", orphan_image),
         ("elastic-ip", orphan_eip), ("key-pair", "cloudsh-orphan-key"), ("security-group", sg_orphan)}
        | _far_orphans(sb, orphan_image),
    )


def _made(kind: str) -> dict[str, Any]:
    """The tag cloudsh gives the key pairs and groups it makes."""
    return {"ResourceType": kind, "Tags": [{"Key": "cloudsh:managed", "Value": "1"}]}


def _far_orphans(sb: Sandbox, image: str) -> set[tuple[str, str]]:
    """One orphan of each kind in a second region (the image a copy of `image`, as one
    copies an image to work nearer its data), and a key pair cloudsh did not make."""
    far = sb.ec2(FAR)
    far.create_key_pair(KeyName="laptop")  # not cloudsh's: never an orphan
    key = far.create_key_pair(KeyName="cloudsh-orphan-key", TagSpecifications=[_made("key-pair")])["KeyName"]
    group = far.create_security_group(GroupName="cloudsh-far-sg", Description="unused",
                                      TagSpecifications=[_made("security-group")])["GroupId"]
    volume = far.create_volume(AvailabilityZone=f"{FAR}a", Size=4)["VolumeId"]
    gone = far.create_volume(AvailabilityZone=f"{FAR}a", Size=2)["VolumeId"]
    sb.past_window(time.monotonic())
    snap = far.create_snapshot(VolumeId=gone)["SnapshotId"]
    copy = far.copy_image(SourceImageId=image, SourceRegion="us-east-1", Name="money-far")["ImageId"]
    address = far.allocate_address(Domain="vpc")["AllocationId"]
    sb.past_window(time.monotonic())
    _until("the far snapshot", lambda: far.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed")
    far.delete_volume(VolumeId=gone)
    _until("the far image", lambda: far.describe_images(ImageIds=[copy])["Images"][0]["State"] == "available")
    return {("volume", volume), ("snapshot", snap), ("image", copy), ("elastic-ip", address),
            ("key-pair", key), ("security-group", group)}


def _cost() -> tuple[dict[str, Any], str]:
    r = cloudsh("cost", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


async def test_cost_adds_up_and_a_budget_crossing_is_said_once_in_each_front_end(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    rec, _ = _cost()
    items = rec["items"]

    def total(key: str, *kinds: str) -> float:
        return sum(i[key] or 0.0 for i in items if not kinds or i["kind"] in kinds)

    assert rec["compute_per_hour"] == pytest.approx(total("per_hour", "compute"), abs=1e-3)
    assert rec["ipv4_per_hour"] == pytest.approx(total("per_hour", "ipv4"), abs=1e-3)
    assert rec["storage_per_month"] == pytest.approx(total("per_month", "volume", "snapshot", "image"), abs=1e-3)
    assert rec["month_to_date"] == pytest.approx(total("month_to_date"), abs=1e-3)
    assert rec["month_projection"] == pytest.approx(total("month_projection"), abs=1e-3)
    assert rec["month_projection"] >= rec["month_to_date"] > 0
    assert "estimate from list prices" in rec["note"]
    assert rec["budget"] is None
    kinds = {i["kind"] for i in items}
    assert {"compute", "ipv4", "volume", "snapshot", "image"} <= kinds
    # The stopped box bills no compute, its disk still does; two Elastic IPs bill $0.005/h each.
    assert {i["id"] for i in items if i["kind"] == "compute"} == {world.spot}
    assert world.kept["volume"] in {i["id"] for i in items if i["kind"] == "volume"}
    assert sum(1 for i in items if i["kind"] == "ipv4" and i["id"].startswith("eipalloc-")) == 2
    history = world.sb.ec2().describe_spot_price_history(
        InstanceTypes=["t3.micro"], AvailabilityZone=SPOT_AZ, ProductDescriptions=["Linux/UNIX"]
    )["SpotPriceHistory"]
    az_price = float(max(history, key=lambda h: h["Timestamp"])["SpotPrice"])
    [compute] = [i for i in items if i["kind"] == "compute"]
    assert compute["per_hour"] == pytest.approx(az_price, abs=1e-4)

    budget = rec["month_projection"] / 0.6  # the projection is 60 % of it
    try:
        r = cloudsh("budget", f"{budget:.6f}")
        assert r.returncode == 0, r.stderr
        said = [line for line in r.stderr.splitlines() if line.startswith("budget:")]
        assert len(said) == 1 and "passed 50%" in said[0], r.stderr
        assert "(60%)" in r.stdout
        rec, err = _cost()  # the next command: said already
        assert rec["budget"] == pytest.approx(budget, rel=1e-4) and "budget:" not in err, err
        await _the_app_says_it_too(world)
        await _the_repl_says_it_too(capsys)
    finally:
        assert ok("budget", "off").strip() == "budget off"
    bad = cloudsh("budget", "lots")
    assert bad.returncode == 2 and "not an amount of dollars" in one_line_error(bad)
    bad = cloudsh("budget", "50", "--email", "me-at-example.org")
    assert bad.returncode == 2 and "not an email address" in one_line_error(bad)
    try:  # email alerts are AWS Budgets': the sandbox says so in one line and keeps the budget
        r = cloudsh("budget", "50", "--email", "me@example.org")
        assert r.returncode == 0 and r.stdout.startswith("budget $50.00/month"), r.stderr
        assert "email alerts need AWS: the sandbox does not serve the AWS Budgets API\n" in r.stderr
    finally:
        assert ok("budget", "off").strip() == "budget off"


async def test_an_aws_budget_emails_as_the_month_nears_and_passes_it(tmp_path: Path) -> None:
    """`budget 50 --email` on AWS: one CreateBudget with its three email notifications; a
    later `budget 60` updates it and makes its notifications afresh for the same address;
    `budget off` deletes it; a refusal changes nothing, here or on AWS."""
    from dataclasses import replace

    from botocore.stub import Stubber

    from cloudsh.config import Settings
    from cloudsh.errors import AWSError
    from cloudsh.ops.money import apply_budget, read_budget
    from cloudsh.root import build_backend
    from cloudsh.services.aws import AwsTarget

    backend = build_backend(replace(Settings.load(), state_dir=tmp_path), AwsTarget(
        region="eu-west-1", access_key_id="AKIAFAKE", secret_access_key="fake", endpoint_url="http://127.0.0.1:9"))
    clients = backend.clients
    sts, budgets = Stubber(clients.client("sts", "us-east-1")), Stubber(clients.client("budgets", "us-east-1"))
    account = {"AccountId": "123456789012"}
    named = {**account, "BudgetName": "cloudsh-monthly"}
    for _ in range(4):
        sts.add_response("get_caller_identity", {"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/me",
                                                 "UserId": "AIDAEXAMPLE"}, {})

    def budget(usd: str) -> dict[str, Any]:
        return {"BudgetName": "cloudsh-monthly", "BudgetLimit": {"Amount": usd, "Unit": "USD"}, "TimeUnit": "MONTHLY",
                "BudgetType": "COST"}

    def alert(kind: str, share: float) -> dict[str, Any]:
        return {"NotificationType": kind, "ComparisonOperator": "GREATER_THAN", "Threshold": share,
                "ThresholdType": "PERCENTAGE"}

    alerts = [alert("ACTUAL", 80.0), alert("ACTUAL", 100.0), alert("FORECASTED", 100.0)]
    me = [{"SubscriptionType": "EMAIL", "Address": "me@example.org"}]
    budgets.add_response("create_budget", {}, {**account, "Budget": budget("50.00"),
                                               "NotificationsWithSubscribers": [{"Notification": n, "Subscribers": me}
                                                                                for n in alerts]})
    budgets.add_client_error("create_budget", "DuplicateRecordException", "exists")
    budgets.add_response("update_budget", {}, {**account, "NewBudget": budget("60.00")})
    old = {**alerts[0], "NotificationState": "OK"}
    budgets.add_response("describe_notifications_for_budget", {"Notifications": [old]}, named)
    budgets.add_response("delete_notification", {}, {**named, "Notification": old})
    for n in alerts:
        budgets.add_response("create_notification", {}, {**named, "Notification": n, "Subscribers": me})
    budgets.add_client_error("delete_budget", "NotFoundException", "gone", expected_params=named)
    budgets.add_client_error("create_budget", "AccessDeniedException", "no")
    with sts, budgets:
        assert "cloudsh-monthly created: AWS emails me@example.org" in str(await apply_budget(backend, 50, "me@example.org"))
        assert "cloudsh-monthly updated" in str(await apply_budget(backend, 60))  # the address it has
        assert read_budget(backend.settings).email == "me@example.org"
        # `budget off`: deleted (here already, in the console: no error), then forgotten.
        assert "deleted: no more emails to me@example.org" in str(await apply_budget(backend, None))
        assert await apply_budget(backend, 70) is None and read_budget(backend.settings).email is None
        with pytest.raises(AWSError, match="not allowed to call CreateBudget"):
            await apply_budget(backend, 50, "me@example.org")
        assert read_budget(backend.settings).usd == 70 and read_budget(backend.settings).email is None
    sts.assert_no_pending_responses()
    budgets.assert_no_pending_responses()
    await backend.close()


async def _the_repl_says_it_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The REPL: one line after the first command, none after the next."""
    from cloudsh.config import Settings
    from cloudsh.repl import Shell
    from cloudsh.root import connect

    shell = Shell(lambda: connect(Settings.load(), sandbox=True))
    capsys.readouterr()
    try:
        assert await shell.execute("volumes") == 0
        assert await shell.execute("volumes") == 0
    finally:
        if shell._refresh_task is not None:
            shell._refresh_task.cancel()
            with contextlib.suppress(BaseException):
                await shell._refresh_task
        if shell._backend is not None:
            await shell._backend.close()
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("budget:")]
    assert len(said) == 1 and "passed 50%" in said[0]


async def _the_app_says_it_too(world: World) -> None:
    """The app: the month and budget in the status bar, coloured at 50 %, one notification,
    and the orphans' monthly total in the Volumes title."""
    from cloudsh.config import Settings
    from cloudsh.root import connect
    from cloudsh.tui.app import CloudshApp
    from cloudsh.tui.handoff import RecordingHandoff
    from cloudsh.tui.volumes import VolumesPane
    from cloudsh.tui.widgets import StatusBar

    app = CloudshApp(lambda: connect(Settings.load(), sandbox=True), handoff=RecordingHandoff())
    async with app.run_test(size=(160, 40)) as pilot:
        status, volumes = app.query_one(StatusBar), app.query_one(VolumesPane)
        deadline = time.monotonic() + 20
        while not (status.month and "orphans" in str(volumes.border_title)):
            assert time.monotonic() < deadline, (status.month, volumes.border_title)
            await pilot.pause(0.05)
        assert "budget" in status.month and status.has_class("budget-50")
        assert "/mo " in str(volumes.border_title)
        toasts = [t for t in app._notifications if t.title == "budget"]
        assert len(toasts) == 1 and "passed 50%" in toasts[0].message


def test_an_expensive_launch_or_resize_is_refused_without_a_terminal(world: World) -> None:
    ec2 = world.sb.ec2()
    keys = {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]}
    groups = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    cheap = {"CLOUDSH_CONFIRM_ABOVE_PER_HOUR": "0.001"}  # t3.micro is above it
    r = cloudsh("launch", "pricey", "--type", "t3.micro", env=cheap)
    assert r.returncode == 2
    line = one_line_error(r)
    assert "t3.micro" in line and "--yes" in line and "$0.001/h" in line
    assert not ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["pricey"]}])["Reservations"]
    assert {k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]} == keys
    assert {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]} == groups
    r = cloudsh("resize", "money-box", "t3.small", env=cheap)
    assert r.returncode == 2 and "--yes" in one_line_error(r)
    [res] = ec2.describe_instances(InstanceIds=[world.stopped])["Reservations"]
    assert res["Instances"][0]["InstanceType"] == "t3.micro"
    # Under the threshold the price is shown all the same, before anything happens.
    r = cloudsh("resize", "money-box", "t3.small", "--yes")
    assert r.returncode == 0, r.stderr
    assert "t3.small on-demand: $" in r.stderr


def test_a_sweep_asks_every_region_once_and_for_boxes_only_where_they_matter(world: World) -> None:
    """Each region is asked each listing once; a region with nothing a box could be using
    (no image, no key pair or group cloudsh made) is not asked for its boxes, key pairs or
    groups."""
    import asyncio

    from cloudsh.config import Settings
    from cloudsh.ops.orphans import sweep
    from cloudsh.root import connect

    backend = connect(Settings.load(), sandbox=True)
    asked: list[tuple[str, str]] = []

    def note(request: Any, event_name: str, **_: Any) -> None:
        scope = request.headers["Authorization"].decode().split("Credential=")[1].split("/")
        asked.append((scope[2], event_name.rsplit(".", 1)[1]))

    backend.clients.register("before-send.ec2", note)
    found = asyncio.run(sweep(backend, all_regions=True))
    regions = asyncio.run(backend.ec2.regions())
    listings = {"DescribeVolumes", "DescribeSnapshots", "DescribeImages", "DescribeAddresses", "DescribeTags"}
    assert len(regions) >= 10 and not found.failed
    for region in regions:
        ops = sorted(op for r, op in asked if r == region and op != "DescribeRegions")
        boxes = ["DescribeInstances", "DescribeKeyPairs", "DescribeSecurityGroups"] if region in ("us-east-1", FAR) else []
        assert ops == sorted([*listings, *boxes]), region


def test_orphans_finds_each_kind_and_clean_removes_exactly_those(world: World) -> None:
    env = {"CLOUDSH_ORPHAN_IMAGE_DAYS": "0"}  # no image here is 90 days old: any unused one counts
    found = json.loads(ok("orphans", "--all-regions", "--json", env=env))
    assert {(o["kind"], o["id"]) for o in found} == world.orphans
    kinds = {"volume", "snapshot", "image", "elastic-ip", "key-pair", "security-group"}
    for region in ("us-east-1", FAR):
        assert {o["kind"] for o in found if o["region"] == region} == kinds
    assert all(o["per_month"] >= 0 for o in found)
    here = json.loads(ok("orphans", "--json", env=env))  # this region only
    assert {(o["kind"], o["id"]) for o in here} == {(o["kind"], o["id"]) for o in found if o["region"] == "us-east-1"}
    assert {o["kind"] for o in found if o["per_month"] > 0} == {"volume", "snapshot", "image", "elastic-ip"}
    refused = cloudsh("orphans", "clean", env=env)
    assert refused.returncode == 2 and "--yes" in one_line_error(refused)
    r = cloudsh("orphans", "clean", "--yes", env=env)  # this region's
    assert r.returncode == 0, r.stderr
    assert f"deleted {len(here)} orphan(s)" in r.stdout and f"({FAR})" not in r.stdout + r.stderr
    r = cloudsh("orphans", "clean", "--all-regions", "--yes", env=env)  # the rest
    assert r.returncode == 0, r.stderr
    assert f"deleted {len(found) - len(here)} orphan(s)" in r.stdout
    ec2 = world.sb.ec2()
    k = world.kept
    assert ec2.describe_volumes(VolumeIds=[k["volume"]])["Volumes"]
    assert ec2.describe_snapshots(SnapshotIds=[k["snapshot"]])["Snapshots"]
    assert ec2.describe_images(ImageIds=[k["image"]])["Images"]
    assert ec2.describe_addresses(AllocationIds=[k["elastic-ip"]])["Addresses"]
    assert ec2.describe_key_pairs(KeyNames=[k["key-pair"]])["KeyPairs"]
    assert ec2.describe_key_pairs(KeyNames=["cloudsh-lookalike"])["KeyPairs"]
    assert ec2.describe_security_groups(GroupIds=[k["security-group"]])["SecurityGroups"]
    orphan_ids = {i for _, i in world.orphans}
    for client in (ec2, world.sb.ec2(FAR)):
        assert not orphan_ids & {v["VolumeId"] for v in client.describe_volumes()["Volumes"]}
        assert not orphan_ids & {s["SnapshotId"] for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
        assert not orphan_ids & {i["ImageId"] for i in client.describe_images(Owners=["self"])["Images"]}
        assert not orphan_ids & {a["AllocationId"] for a in client.describe_addresses()["Addresses"]}
        assert not orphan_ids & {g["GroupId"] for g in client.describe_security_groups()["SecurityGroups"]}
    assert [k["KeyName"] for k in world.sb.ec2(FAR).describe_key_pairs()["KeyPairs"]] == ["laptop"]


def test_cost_explorer_is_asked_at_most_once_a_day(tmp_path: Path) -> None:
    """AWS's own figure: one GetCostAndUsage request a day (each costs $0.01), cached on
    disk; a denied request says which IAM action is missing and is not retried that day."""
    from botocore.stub import Stubber

    from cloudsh.services.aws import AwsTarget, ClientFactory
    from cloudsh.services.costs import CostExplorer

    now = [datetime(2026, 12, 10, 12, tzinfo=UTC)]
    factory = ClientFactory(AwsTarget(region="eu-west-1", access_key_id="AKIAFAKE", secret_access_key="fake",
                                      endpoint_url="http://127.0.0.1:9"))
    ce = CostExplorer(factory, tmp_path, clock=lambda: now[0])
    stub = Stubber(factory.client("ce", "us-east-1"))
    answer = {"ResultsByTime": [{"Total": {"UnblendedCost": {"Amount": "12.345", "Unit": "USD"}}}]}
    stub.add_response("get_cost_and_usage", answer, {
        "TimePeriod": {"Start": "2026-12-01", "End": "2026-12-11"}, "Granularity": "MONTHLY", "Metrics": ["UnblendedCost"]})
    stub.add_client_error("get_cost_and_usage", "AccessDeniedException", "no")
    with stub:
        first = ce.month_to_date()
        assert (first.usd, first.note) == (12.35, "AWS Cost Explorer (about a day behind)")
        now[0] += timedelta(hours=23)
        assert CostExplorer(factory, tmp_path, clock=lambda: now[0]).month_to_date().usd == 12.35  # from disk
        now[0] += timedelta(hours=2)
        denied = ce.month_to_date()
        assert denied.usd is None and "ce:GetCostAndUsage" in denied.note
        assert ce.month_to_date() == denied  # not asked again today
    stub.assert_no_pending_responses()


def test_leaving_the_app_says_what_running_boxes_burn(capsys: pytest.CaptureFixture[str]) -> None:
    from cloudsh.tui.money import say_leaving

    say_leaving([{"name": "idle", "id": "i-1", "state": "stopped", "price_per_hour": 1.0}])
    assert capsys.readouterr().err == ""
    say_leaving([{"name": "gpu", "id": "i-2", "state": "running", "price_per_hour": 1.006},
                 {"name": "", "id": "i-3", "state": "running", "price_per_hour": 0.0104}])
    assert capsys.readouterr().err == (
        "cloudsh: 2 box(es) still running (gpu, i-3), burning $1.016/h; `cloudsh stop NAME` stops one\n"
    )
