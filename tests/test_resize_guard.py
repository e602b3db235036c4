"""`resize` checks everything before it stops a box: architecture, AZ offering, vCPU quota."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.cli import by_name, cloudsh, ok, one_line_error
from tests.sandbox_fixture import Sandbox


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
    assert "16 vCPUs" in line and "on-demand P vCPU quota (L-417A185B) is 0" in line
    assert "request-service-quota-increase" in line
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
        assert r.returncode == 2 and "spot P vCPU quota (L-7212CCBC)" in one_line_error(r)
    finally:
        cloudsh("terminate", name, "--yes")


def test_allowed_resize_shows_the_quota_and_prices(box: str) -> None:
    r = cloudsh("resize", box, "t3.small", "--yes")
    assert r.returncode == 0, r.stderr
    assert "vCPU quota" in r.stderr and "$" in r.stderr
    rec = by_name(box)
    assert rec is not None and (rec["state"], rec["type"]) == ("running", "t3.small")
    ok("resize", box, "t3.micro", "--yes")
