"""`resize` checks everything before it stops a box: architecture, AZ offering, vCPU quota."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.cli import by_name, cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend


@pytest.fixture(scope="module")
def box(sandbox: Sandbox) -> Iterator[str]:
    name = f"rz-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    yield name
    cloudsh("terminate", name, "--yes")


def _untouched(name: str) -> None:
    rec = by_name(name)
    assert rec is not None and (rec["state"], rec["type"]) == ("running", "t3.micro")


def test_refused_by_architecture_without_stopping(box: str) -> None:
    r = cloudsh("resize", box, "t4g.micro", "--yes")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "arm64" in line and "x86_64" in line
    _untouched(box)


def test_refused_over_quota_without_stopping(box: str) -> None:
    # The sandbox's P quotas are 0 vCPUs, as on a new account; p5.4xlarge has 16.
    r = cloudsh("resize", box, "p5.4xlarge", "--yes")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "Running On-Demand P instances: 0 vCPUs, this p5.4xlarge needs 16" in line
    assert "request-service-quota-increase --service-code ec2 --quota-code L-417A185B" in line
    assert "console.aws.amazon.com/servicequotas" in line
    _untouched(box)


def test_refused_when_not_offered_in_the_az(box: str) -> None:
    r = cloudsh("resize", box, "trn1.2xlarge", "--yes")
    assert r.returncode == 2 and "not offered in us-east-1a" in one_line_error(r)
    _untouched(box)


def test_spot_boxes_are_held_to_the_spot_quota(sandbox: Sandbox) -> None:
    name = f"rzs-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro", "--spot")
    try:
        r = cloudsh("resize", name, "p5.4xlarge", "--yes")
        assert r.returncode == 2 and "All P Spot Instance Requests: 0 vCPUs" in one_line_error(r)
    finally:
        cloudsh("terminate", name, "--yes")


def test_allowed_resize_shows_the_quota_and_prices(box: str) -> None:
    r = cloudsh("resize", box, "t3.small", "--yes")
    assert r.returncode == 0, r.stderr
    assert "vCPUs in use after" in r.stderr and "$" in r.stderr
    rec = by_name(box)
    assert rec is not None and (rec["state"], rec["type"]) == ("running", "t3.small")
    ok("resize", box, "t3.micro", "--yes")


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text: str = "") -> None:
        self.lines.append(text)

    def json(self, data: object) -> None:
        self.lines.append(repr(data))

    def info(self, text: str) -> None:
        self.lines.append(text)

    def write(self, chunk: str, *, err: bool = False) -> None:
        self.lines.append(chunk)


async def test_no_capacity_on_start_offers_the_previous_type_back(sandbox: Sandbox) -> None:
    """StartInstances fails for capacity once (a botocore hook at the edge): the user is
    asked, and the box goes back to its old type and runs again."""
    from cloudsh.commands import Context, dispatch
    from cloudsh.config import Settings
    from cloudsh.root import connect

    name = f"rzc-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    backend = connect(Settings.load(), sandbox=True)
    _no_capacity_once(backend)
    questions: list[str] = []

    async def confirm(question: str) -> bool:
        questions.append(question)
        return True

    out = _Out()
    try:
        ctx = Context(out=out, backend_factory=lambda: backend, confirm=confirm)
        assert await dispatch(ctx, ["resize", name, "t3.small"]) == 0
        assert any("no t3.small capacity" in q and "Go back to t3.micro" in q for q in questions)
        rec = by_name(name)
        assert rec is not None and (rec["state"], rec["type"]) == ("running", "t3.micro")
    finally:
        await backend.close()
        cloudsh("terminate", name, "--yes")


async def test_the_api_goes_back_to_the_previous_type_when_told_to(sandbox: Sandbox) -> None:
    """The same capacity fallback through the Python API: `go_back=True` answers the question."""
    from cloudsh.api import Cloud
    from cloudsh.config import Settings
    from cloudsh.errors import CapacityError
    from cloudsh.root import connect

    name = f"rza-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    backend = connect(Settings.load(), sandbox=True)
    try:
        box = await Cloud(backend=backend).ainstance(name)
        _no_capacity_once(backend)
        await box.aresize("t3.small", go_back=True)
        assert (box.state, box.type) == ("running", "t3.micro")
        _no_capacity_once(backend)
        with pytest.raises(CapacityError, match="no t3.small capacity"):
            await box.aresize("t3.small")  # unasked, it stays stopped as the new type
        await box.arefresh()
        assert (box.state, box.type) == ("stopped", "t3.small")
    finally:
        await backend.close()
        cloudsh("terminate", name, "--yes")


def _no_capacity_once(backend: Backend) -> None:
    """The next StartInstances fails for want of t3.small capacity (a botocore hook at the edge)."""
    from botocore.awsrequest import AWSResponse

    failures = [1]

    def no_capacity(**_: object) -> object:
        if not failures:
            return None
        failures.pop()
        error = {"Code": "InsufficientInstanceCapacity", "Message": "We currently do not have sufficient t3.small capacity"}
        return AWSResponse("http://sandbox", 500, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 500}}

    backend.clients.register("before-call.ec2.StartInstances", no_capacity)
