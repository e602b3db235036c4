"""Faults injected between cloudsh and the sandbox's EC2 endpoint (never inside cloudsh)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudsh.config import Settings
from cloudsh.errors import CapacityError, CredentialsError
from cloudsh.ops import instances as ops
from cloudsh.root import build_backend
from cloudsh.sandbox import state as sbx
from cloudsh.sandbox.control import sandbox_up
from cloudsh.services.aws import AwsTarget, ClientFactory
from cloudsh.services.backend import Backend
from cloudsh.services.ec2 import EC2Service
from tests.faults import DroppingProxy, ec2_error
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def endpoint() -> str:
    return sandbox_up(Settings.load()).endpoint


def backend_via(url: str, settings: Settings) -> Backend:
    """A sandbox backend whose EC2 traffic goes through `url` (the proxy)."""
    target = AwsTarget(
        region=sbx.REGION, endpoint_url=url, access_key_id=sbx.ACCESS_KEY_ID,
        secret_access_key=sbx.SECRET_ACCESS_KEY, sandbox=True,
    )
    return build_backend(settings, target)


@pytest.fixture
def proxy_factory(endpoint: str) -> Iterator[list[DroppingProxy]]:
    made: list[DroppingProxy] = []
    yield made
    for p in made:
        p.close()


def is_run_instances(request: bytes) -> bool:
    return b"Action=RunInstances" in request


async def test_launch_survives_a_dropped_response_without_a_second_box(endpoint: str, proxy_factory: list[DroppingProxy]) -> None:
    dropped_once: list[bool] = []

    def drop_first_run(request: bytes) -> bool:
        if is_run_instances(request) and not dropped_once:
            dropped_once.append(True)
            return True
        return False

    proxy = DroppingProxy(endpoint, drop=drop_first_run)
    proxy_factory.append(proxy)
    b = backend_via(proxy.url, Settings.load())
    plan = await ops.plan_launch(b, "retried", instance_type="t3.micro")
    inst = await ops.launch(b, plan, wait=False)
    assert proxy.dropped == 1
    runs = [r for r in proxy.requests if is_run_instances(r)]
    assert len(runs) == 2  # botocore retried the call...
    tokens = {r.split(b"ClientToken=")[1].split(b"&")[0] for r in runs}
    assert len(tokens) == 1  # ...with the same idempotency token
    named = [i for i in await b.ec2.list_instances() if i.name == "retried"]
    assert [i.id for i in named] == [inst.id]  # and EC2 made exactly one box
    await b.ec2.terminate([inst.id])


async def test_failed_launch_leaves_nothing_it_created(endpoint: str, proxy_factory: list[DroppingProxy], tmp_path: Path) -> None:
    proxy = DroppingProxy(
        endpoint,
        # A server error (HTTP 500), as EC2 sends it; every AZ that offers the type is tried.
        fail=lambda r: ec2_error("InsufficientInstanceCapacity", "We currently do not have sufficient g5.xlarge capacity", 500)
        if is_run_instances(r) else None,
    )
    proxy_factory.append(proxy)
    settings = dataclasses.replace(
        Settings.load(), state_dir=tmp_path / "state", key_name="rollback", security_group="rollback-sg"
    )
    b = backend_via(proxy.url, settings)
    plan = await ops.plan_launch(b, "nocap", instance_type="g5.xlarge")
    with pytest.raises(CapacityError) as err:
        await ops.launch(b, plan, wait=False)
    assert "capacity" in str(err.value) and "quota" not in str(err.value)
    runs = [r for r in proxy.requests if is_run_instances(r)]
    assert len({r.split(b"Placement.AvailabilityZone=")[1][:10] for r in runs}) == len(runs) > 1  # one try per AZ
    assert await b.ec2.find_security_group("rollback-sg") is None
    keys = await b.ec2.call("describe_key_pairs")
    assert not [k for k in keys["KeyPairs"] if k["KeyName"].startswith("rollback-")]
    assert not [i for i in await b.ec2.list_instances() if i.name == "nocap"]


async def test_expired_credentials_say_what_to_do(endpoint: str, proxy_factory: list[DroppingProxy]) -> None:
    proxy = DroppingProxy(endpoint, fail=lambda r: ec2_error("RequestExpired", "Request has expired", 400))
    proxy_factory.append(proxy)
    target = AwsTarget(region="us-east-1", profile=None, endpoint_url=proxy.url, access_key_id="AKIAEXAMPLE", secret_access_key="x")
    ec2 = EC2Service(ClientFactory(target))
    with pytest.raises(CredentialsError) as err:
        await ec2.list_instances()
    text = str(err.value)
    assert "aws sso login" in text and "aws configure" in text


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "CLOUDSH_SANDBOX"}
    env.update(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="x", AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
    r = subprocess.run([sys.executable, "-m", "cloudsh", "--aws", "ls"], capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    # One line for the error, after the one saying where --aws goes instead of AWS.
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 2, r.stderr
    assert lines[0] == "AWS_ENDPOINT_URL is set: --aws talks to http://127.0.0.1:9; unset it to reach AWS"
    assert "cannot reach AWS" in lines[1]


async def test_a_type_the_region_does_not_offer(endpoint: str) -> None:
    from cloudsh.errors import UsageError

    # The sandbox's moto server knows every region's offerings; eu-west-3 has no P5.
    target = AwsTarget(region="eu-west-3", endpoint_url=endpoint, access_key_id=sbx.ACCESS_KEY_ID,
                       secret_access_key=sbx.SECRET_ACCESS_KEY, sandbox=True)
    ec2 = EC2Service(ClientFactory(target))
    with pytest.raises(UsageError) as err:
        await ec2.instance_type("p5.48xlarge")
    assert "not offered in eu-west-3" in str(err.value)
    assert (await ec2.instance_type("t3.micro")).vcpus == 2


def test_service_models_are_cached_between_processes(tmp_path: Path) -> None:
    from cloudsh.services.aws import CachingLoader

    none = tmp_path / "no-prepared-models"
    first = CachingLoader(tmp_path, prepared=none)
    cold = first.load_service_model("ec2", "service-2")
    first.flush()  # written in the background; flushed before a process exits
    cached = list((tmp_path / "botocore-models").glob("*-ec2-latest.pickle"))
    assert len(cached) == 1
    warm = CachingLoader(tmp_path, prepared=none).load_service_model("ec2", "service-2")  # a new process, in effect
    assert warm == cold and warm["metadata"]["serviceId"] == "EC2"
    cached[0].write_bytes(b"not a pickle")  # a damaged cache is parsed again, not trusted
    assert CachingLoader(tmp_path, prepared=none).load_service_model("ec2", "service-2") == cold


# -- throttling, 503, and creates whose answer is lost: each ends in exactly one resource


def first(action: bytes, answer: Callable[[bytes], bytes | bool]) -> Callable[[bytes], bytes | bool | None]:
    """A rule for the first request of `action` only."""
    done: list[bool] = []

    def rule(request: bytes) -> bytes | bool | None:
        if b"Action=" + action + b"&" in request + b"&" and not done:
            done.append(True)
            return answer(request)
        return None

    return rule


def via(made: list[DroppingProxy], upstream: str, settings: Settings, **rules: Callable[[bytes], object]) -> tuple[DroppingProxy, Backend]:
    proxy = DroppingProxy(upstream, **rules)  # type: ignore[arg-type]
    made.append(proxy)
    return proxy, backend_via(proxy.url, settings)


async def test_throttling_and_503_on_describe_and_run_calls_are_retried(
    endpoint: str, proxy_factory: list[DroppingProxy], tmp_path: Path
) -> None:
    throttled = first(b"DescribeInstances", lambda _: ec2_error("RequestLimitExceeded", "Request limit exceeded.", 503))
    unavailable = first(b"RunInstances", lambda _: ec2_error("Unavailable", "The server is overloaded", 503))
    described = first(b"DescribeSecurityGroups", lambda _: ec2_error("RequestLimitExceeded", "Request limit exceeded.", 503))

    def fail(request: bytes) -> bytes | None:
        for rule in (throttled, unavailable, described):
            answer = rule(request)
            if isinstance(answer, bytes):
                return answer
        return None

    proxy, b = via(proxy_factory, endpoint, dataclasses.replace(Settings.load(), state_dir=tmp_path), fail=fail)
    plan = await ops.plan_launch(b, "throttled", instance_type="t3.micro")
    inst = await ops.launch(b, plan, wait=False)
    named = [i for i in await b.ec2.list_instances() if i.name == "throttled"]
    assert [i.id for i in named] == [inst.id]
    runs = [r for r in proxy.requests if is_run_instances(r)]
    assert len(runs) >= 2  # the 503 was retried (and maybe EC2's "not yet" for the new group)...
    assert len({r.split(b"ClientToken=")[1].split(b"&")[0] for r in runs}) == 1  # ...with one token
    assert b"".join(proxy.requests).count(b"Action=DescribeSecurityGroups") >= 2
    await b.ec2.terminate([inst.id])


def _count(sandbox: Sandbox, what: str, **kwargs: object) -> int:
    ec2 = sandbox.ec2()
    calls = {
        "group": lambda: ec2.describe_security_groups(**kwargs)["SecurityGroups"],
        "key": lambda: ec2.describe_key_pairs(**kwargs)["KeyPairs"],
        "volume": lambda: ec2.describe_volumes(**kwargs)["Volumes"],
        "snapshot": lambda: ec2.describe_snapshots(OwnerIds=["self"], **kwargs)["Snapshots"],
        "image": lambda: ec2.describe_images(Owners=["self"], **kwargs)["Images"],
    }
    return len(calls[what]())


def _named(key: str, value: str) -> dict[str, object]:
    return {"Filters": [{"Name": key, "Values": [value]}]}


async def test_each_create_whose_answer_is_lost_makes_exactly_one(
    sandbox: Sandbox, endpoint: str, proxy_factory: list[DroppingProxy], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    actions = [b"CreateSecurityGroup", b"ImportKeyPair", b"CreateVolume", b"CreateSnapshot", b"CreateImage"]
    rules = [first(a, lambda _: True) for a in actions]
    proxy, b = via(
        proxy_factory, endpoint, dataclasses.replace(Settings.load(), state_dir=tmp_path),
        drop=lambda r: any(rule(r) for rule in rules),
    )
    ec2 = b.ec2
    box = sandbox.launch("t3.micro", wait=False)
    key_line = _public_key(sandbox)

    group = await ec2.create_security_group(f"lost-{tag}", "lost answer")
    await ec2.import_key_pair(f"lost-{tag}", key_line)
    [az, *_] = await ec2.availability_zones()
    vol = await ec2.create_volume(az=az, size_gb=1, volume_type="gp3", snapshot_id=None, tags={"Name": f"lost-{tag}"})
    snap = await ec2.create_snapshot(vol.id, "lost answer", {"Name": f"lost-{tag}"})
    image = await ec2.create_image(box.id, f"lost-{tag}", no_reboot=True, tags={"Name": f"lost-{tag}"})

    assert proxy.dropped == len(actions)  # every create lost its first answer...
    assert _count(sandbox, "group", **_named("group-name", f"lost-{tag}")) == 1  # ...and made one
    assert _count(sandbox, "key", **_named("key-name", f"lost-{tag}")) == 1
    assert _count(sandbox, "volume", **_named("tag:Name", f"lost-{tag}")) == 1
    assert _count(sandbox, "snapshot", **_named("tag:Name", f"lost-{tag}")) == 1
    assert _count(sandbox, "image", **_named("name", f"lost-{tag}")) == 1
    assert group.startswith("sg-") and vol.id.startswith("vol-") and snap.id.startswith("snap-")
    assert image.startswith("ami-")
    sandbox.past_window(time.monotonic())  # what was just made is known everywhere only after a moment
    client = sandbox.ec2()
    client.deregister_image(ImageId=image)
    client.delete_snapshot(SnapshotId=snap.id)
    client.delete_volume(VolumeId=vol.id)
    client.delete_key_pair(KeyName=f"lost-{tag}")
    client.delete_security_group(GroupId=group)
    client.terminate_instances(InstanceIds=[box.id])


def _public_key(sandbox: Sandbox) -> str:
    import asyncssh

    return str(asyncssh.read_private_key(sandbox.key_path).export_public_key("openssh").decode())

