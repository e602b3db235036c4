"""Faults injected between cloudsh and the sandbox's EC2 endpoint (never inside cloudsh)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
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

    # The sandbox's moto server knows every region's offerings; af-south-1 has no P5.
    target = AwsTarget(region="af-south-1", endpoint_url=endpoint, access_key_id=sbx.ACCESS_KEY_ID,
                       secret_access_key=sbx.SECRET_ACCESS_KEY, sandbox=True)
    ec2 = EC2Service(ClientFactory(target))
    with pytest.raises(UsageError) as err:
        await ec2.instance_type("p5.48xlarge")
    assert "not offered in af-south-1" in str(err.value)
    assert (await ec2.instance_type("t3.micro")).vcpus == 2


def test_service_models_are_cached_between_processes(tmp_path: Path) -> None:
    from cloudsh.services.aws import CachingLoader

    first = CachingLoader(tmp_path)
    cold = first.load_service_model("ec2", "service-2")
    first.flush()  # written in the background; flushed before a process exits
    cached = list((tmp_path / "botocore-models").glob("*-ec2-latest.pickle"))
    assert len(cached) == 1
    warm = CachingLoader(tmp_path).load_service_model("ec2", "service-2")  # a new process, in effect
    assert warm == cold and warm["metadata"]["serviceId"] == "EC2"
    cached[0].write_bytes(b"not a pickle")  # a damaged cache is parsed again, not trusted
    assert CachingLoader(tmp_path).load_service_model("ec2", "service-2") == cold
