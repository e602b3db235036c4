"""Service Quotas: vCPU quotas per family class, on-demand and spot apart.

The AWS path is tested with botocore's Stubber (nothing leaves this machine); the
sandbox's own quota table through its real endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import Stubber

from cloudsh.sandbox import quotas as sandbox_quotas
from cloudsh.services.aws import AwsTarget, ClientFactory
from cloudsh.services.quotas import QuotaService, family_class
from tests.sandbox_fixture import Sandbox


@pytest.mark.parametrize(
    ("itype", "cls"),
    [("g5.xlarge", "g"), ("g4dn.12xlarge", "g"), ("vt1.3xlarge", "g"), ("p5.48xlarge", "p"),
     ("p4d.24xlarge", "p"), ("inf2.xlarge", "inf"), ("x2idn.16xlarge", "x"), ("f1.2xlarge", "f"),
     ("t3.micro", "standard"), ("m7i.large", "standard"), ("c7g.xlarge", "standard")],
)
def test_family_class(itype: str, cls: str) -> None:
    assert family_class(itype) == cls


def _service() -> tuple[QuotaService, Stubber]:
    factory = ClientFactory(
        AwsTarget(region="us-east-1", access_key_id="AKIAFAKE", secret_access_key="fake", endpoint_url="http://127.0.0.1:9")
    )
    client = factory.client("service-quotas")
    return QuotaService(factory), Stubber(client)


def _quota(code: str, value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "QuotaName": "x", "Value": value}}


async def test_on_demand_and_spot_read_their_own_quota() -> None:
    svc, stub = _service()
    stub.add_response("get_service_quota", _quota("L-DB2E81BA", 32.0), {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"})
    stub.add_response("get_service_quota", _quota("L-3819A6DF", 8.0), {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF"})
    with stub:
        on_demand = await svc.vcpu_quota("g5.2xlarge", spot=False)
        spot = await svc.vcpu_quota("g5.2xlarge", spot=True)
    assert (on_demand.limit, on_demand.code) == (32.0, "L-DB2E81BA")
    assert (spot.limit, spot.code) == (8.0, "L-3819A6DF")
    assert on_demand.name == "on-demand G and VT vCPU quota (L-DB2E81BA)"
    assert spot.name.startswith("spot G and VT")


async def test_no_applied_value_falls_back_to_the_default() -> None:
    svc, stub = _service()
    stub.add_client_error("get_service_quota", "NoSuchResourceException", "no applied quota")
    stub.add_response("get_aws_default_service_quota", _quota("L-417A185B", 0.0))
    with stub:
        q = await svc.vcpu_quota("p5.4xlarge", spot=False)
    assert (q.family_class, q.limit) == ("p", 0.0)


async def test_unreadable_quota_is_unknown_not_guessed() -> None:
    svc, stub = _service()
    stub.add_client_error("get_service_quota", "AccessDeniedException", "not allowed", 403)
    with stub:
        q = await svc.vcpu_quota("t3.micro", spot=False)
    assert q.limit is None and q.code == "L-1216C47A"


async def test_sandbox_serves_its_quota_table(sandbox: Sandbox) -> None:
    factory = ClientFactory(
        AwsTarget(
            region="us-east-1",
            endpoint_url=sandbox.env["AWS_ENDPOINT_URL"],
            access_key_id=sandbox.env["AWS_ACCESS_KEY_ID"],
            secret_access_key=sandbox.env["AWS_SECRET_ACCESS_KEY"],
            sandbox=True,
        )
    )
    q = await QuotaService(factory).vcpu_quota("p5.4xlarge", spot=True)
    assert (q.code, q.limit) == ("L-7212CCBC", sandbox_quotas.EC2_QUOTAS["L-7212CCBC"][1])
    raw = factory.client("service-quotas").get_service_quota(ServiceCode="ec2", QuotaCode="L-1216C47A")
    assert raw["Quota"]["QuotaName"].startswith("Running On-Demand Standard")


def test_sandbox_quota_answers_like_aws() -> None:
    table = sandbox_quotas.table()
    status, doc = sandbox_quotas.answer("ServiceQuotasV20190624.GetServiceQuota", b'{"ServiceCode":"ec2","QuotaCode":"L-NOPE"}', table, "us-east-1")
    assert status.startswith("400") and doc["__type"] == "NoSuchResourceException"
