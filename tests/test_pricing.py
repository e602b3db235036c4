"""Pricing: the AWS Pricing API and spot history through real botocore clients.

moto serves no Pricing API (and a constant spot price), so the AWS path is exercised
with botocore's Stubber on real clients that point at a dead loopback port: any request
that slipped past the Stubber would fail instead of reaching AWS.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from botocore.stub import Stubber

from cloudsh.commands.complete import REGIONS
from cloudsh.errors import CloudshError, CredentialsError
from cloudsh.models import (
    EBS_PRICES_DATE,
    Price,
    Volume,
    box_hourly,
    ebs_prices,
    ipv4_hourly,
    snapshot_monthly,
    volume_monthly,
)
from cloudsh.sandbox import prices as sandbox_prices
from cloudsh.sandbox.pricing import SandboxOnDemandSource, SandboxSpotSource
from cloudsh.services.aws import AwsTarget, ClientFactory
from cloudsh.services.pricing import (
    AwsOnDemandSource,
    PricingService,
    hourly_cost,
)

NOW = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


class StubbedClients(ClientFactory):
    """Real boto3 clients with a Stubber each, shared by every thread so one Stubber sees all calls."""

    def __init__(self, *, sandbox: bool = False, unstubbed: tuple[str, ...] = ()) -> None:
        super().__init__(
            AwsTarget(
                region="us-east-1",
                access_key_id="x",
                secret_access_key="y",
                endpoint_url="http://127.0.0.1:9",
                sandbox=sandbox,
            )
        )
        self._shared: dict[tuple[str, str], Any] = {}
        self.stubbers: dict[str, Stubber] = {}
        self.unstubbed = unstubbed
        self._lock = threading.Lock()

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.target.region)
        with self._lock:
            if key not in self._shared:
                client = super().client(service, region)
                if service not in self.unstubbed:
                    self.stubbers[service] = Stubber(client)
                    self.stubbers[service].activate()
                self._shared[key] = client
            return self._shared[key]

    def stub(self, service: str) -> Stubber:
        self.client(service, "us-east-1")
        return self.stubbers[service]


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def product(instance_type: str, usd: str, region: str = "us-east-1", sku: str = "") -> str:
    """One GetProducts PriceList entry, shaped like the real (aws_v1) documents."""
    sku = sku or f"SKU{abs(hash(instance_type)) % 10**8:08d}"
    offer = f"{sku}.JRTCKXETXF"
    rate = f"{offer}.6YS6EN2CT7"
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "enhancedNetworkingSupported": "Yes",
                    "intelTurboAvailable": "No",
                    "memory": "16 GiB",
                    "dedicatedEbsThroughput": "Up to 3500 Mbps",
                    "vcpu": "4",
                    "classicnetworkingsupport": "false",
                    "capacitystatus": "Used",
                    "locationType": "AWS Region",
                    "storage": "1 x 250 NVMe SSD",
                    "instanceFamily": "GPU instance",
                    "operatingSystem": "Linux",
                    "regionCode": region,
                    "physicalProcessor": "AMD EPYC 7R32",
                    "gpu": "1",
                    "gpuMemory": "24 GB",
                    "networkPerformance": "Up to 10 Gigabit",
                    "servicename": "Amazon Elastic Compute Cloud",
                    "instancesku": "Q7BNR6AMU2QJGXVT",
                    "instanceType": instance_type,
                    "tenancy": "Shared",
                    "usagetype": f"BoxUsage:{instance_type}",
                    "normalizationSizeFactor": "8",
                    "preInstalledSw": "NA",
                    "processorArchitecture": "64-bit",
                    "location": "US East (N. Virginia)",
                    "servicecode": "AmazonEC2",
                    "licenseModel": "No License required",
                    "currentGeneration": "Yes",
                    "operation": "RunInstances",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    offer: {
                        "priceDimensions": {
                            rate: {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                                "appliesTo": [],
                                "rateCode": rate,
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-02-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                },
                "Reserved": {
                    f"{sku}.4NA7Y494T4": {
                        "priceDimensions": {
                            f"{sku}.4NA7Y494T4.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": "0.4230000000"},
                                "description": "Linux/UNIX (Amazon VPC), reserved",
                                "appliesTo": [],
                                "rateCode": f"{sku}.4NA7Y494T4.6YS6EN2CT7",
                                "beginRange": "0",
                                "endRange": "Inf",
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-02-01T00:00:00Z",
                        "offerTermCode": "4NA7Y494T4",
                        "termAttributes": {
                            "LeaseContractLength": "1yr",
                            "OfferingClass": "standard",
                            "PurchaseOption": "No Upfront",
                        },
                    }
                },
            },
            "version": "20260214000000",
            "publicationDate": "2026-02-14T00:00:00Z",
        }
    )


def products_params(instance_type: str, token: str | None = None) -> dict[str, Any]:
    filters = [
        ("instanceType", instance_type),
        ("regionCode", "us-east-1"),
        ("operatingSystem", "Linux"),
        ("tenancy", "Shared"),
        ("preInstalledSw", "NA"),
        ("capacitystatus", "Used"),
        ("licenseModel", "No License required"),
    ]
    params: dict[str, Any] = {
        "ServiceCode": "AmazonEC2",
        "FormatVersion": "aws_v1",
        "Filters": [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in filters],
    }
    if token:
        params["NextToken"] = token
    return params


def add_products(stub: Stubber, instance_type: str, *pages: list[str]) -> None:
    """Queue the GetProducts pages for one type, chained with NextToken."""
    for i, page in enumerate(pages):
        response: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": page}
        if i + 1 < len(pages):
            response["NextToken"] = f"{instance_type}-page{i + 2}"
        token = f"{instance_type}-page{i + 1}" if i else None
        stub.add_response("get_products", response, products_params(instance_type, token))


def spot_row(instance_type: str, az: str, usd: str, at: datetime) -> dict[str, Any]:
    return {
        "AvailabilityZone": az,
        "InstanceType": instance_type,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": usd,
        "Timestamp": at,
    }


def add_spot(
    stub: Stubber, types: list[str], pages: list[list[dict[str, Any]]], **times: datetime
) -> None:
    for i, rows in enumerate(pages):
        response: dict[str, Any] = {"SpotPriceHistory": rows}
        if i + 1 < len(pages):
            response["NextToken"] = f"spot{i + 2}"
        params: dict[str, Any] = {
            "InstanceTypes": types,
            "ProductDescriptions": ["Linux/UNIX"],
            **(times or {"StartTime": NOW}),
        }
        if i:
            params["NextToken"] = f"spot{i + 1}"
        stub.add_response("describe_spot_price_history", response, params)


def make_service(clients: StubbedClients, cache_dir: Path, clock: Clock) -> PricingService:
    source = AwsOnDemandSource(clients, "us-east-1", workers=1)
    return PricingService(clients, "us-east-1", source, cache_dir, clock=clock)


# -- AwsOnDemandSource ----------------------------------------------------------------


def test_on_demand_source_follows_pages_and_reads_the_on_demand_rate() -> None:
    clients = StubbedClients()
    stub = clients.stub("pricing")
    # A $0 row (such as an unused capacity reservation) is not a price; the real one is on page 2.
    add_products(
        stub,
        "g5.xlarge",
        [product("g5.xlarge", "0.0000000000", sku="ZERO")],
        [product("g5.xlarge", "1.0060000000")],
    )
    source = AwsOnDemandSource(clients, "us-east-1")
    assert source.fetch(["g5.xlarge"]) == {"g5.xlarge": 1.006}
    stub.assert_no_pending_responses()
    assert "Pricing API" in source.label and "us-east-1" in source.label


def test_on_demand_source_leaves_out_types_without_a_price() -> None:
    clients = StubbedClients()
    stub = clients.stub("pricing")
    add_products(stub, "t3.micro", [product("t3.micro", "0.0104000000")])
    add_products(stub, "x9.nonesuch", [])
    add_products(stub, "p5.48xlarge", [product("p5.48xlarge", "55.0400000000")])
    source = AwsOnDemandSource(clients, "us-east-1", workers=1)
    got = source.fetch(["t3.micro", "x9.nonesuch", "p5.48xlarge"])
    assert got == {"t3.micro": 0.0104, "p5.48xlarge": 55.04}
    stub.assert_no_pending_responses()


def test_on_demand_source_runs_requests_in_parallel() -> None:
    clients = StubbedClients()
    threads: set[int] = set()

    def slow_request(**_: Any) -> None:
        threads.add(threading.get_ident())
        time.sleep(0.05)  # long enough for the other requests to start meanwhile

    clients.register("before-parameter-build.pricing.GetProducts", slow_request)
    stub = clients.stub("pricing")
    types = ["m5.large", "m5.xlarge", "m5.2xlarge", "m5.4xlarge"]
    # Requests in parallel come in no fixed order, so every answer carries all four
    # documents; each request must take the one for the type it asked about.
    everything = [product(t, f"0.{i + 1}") for i, t in enumerate(types)]
    for _ in types:
        stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": everything})
    source = AwsOnDemandSource(clients, "us-east-1", workers=4)
    assert source.fetch(types) == {
        "m5.large": 0.1,
        "m5.xlarge": 0.2,
        "m5.2xlarge": 0.3,
        "m5.4xlarge": 0.4,
    }
    stub.assert_no_pending_responses()
    assert len(threads) > 1


# -- PricingService ------------------------------------------------------------------


async def test_prices_join_on_demand_with_the_cheapest_current_spot(tmp_path: Path) -> None:
    clients, clock = StubbedClients(), Clock()
    add_products(clients.stub("pricing"), "g5.xlarge", [product("g5.xlarge", "1.0060000000")])
    add_products(clients.stub("pricing"), "t3.micro", [product("t3.micro", "0.0104000000")])
    hour = timedelta(hours=1)
    add_spot(
        clients.stub("ec2"),
        ["g5.xlarge", "t3.micro"],
        [
            [
                spot_row("g5.xlarge", "us-east-1a", "0.352100", NOW - 3 * hour),
                # An older, lower price in 1b is history, not the current price.
                spot_row("g5.xlarge", "us-east-1b", "0.100000", NOW - 5 * hour),
                spot_row("g5.xlarge", "us-east-1b", "0.401000", NOW - 1 * hour),
            ],
            [
                spot_row("g5.xlarge", "us-east-1c", "0.338700", NOW - 2 * hour),
                spot_row("g5.xlarge", "us-east-1d", "0.610300", NOW - 2 * hour),
                spot_row("t3.micro", "us-east-1f", "0.003900", NOW - 9 * hour),
            ],
        ],
    )
    service = make_service(clients, tmp_path, clock)
    got = await service.prices(["g5.xlarge", "t3.micro", "g5.xlarge"])
    clients.stub("pricing").assert_no_pending_responses()
    clients.stub("ec2").assert_no_pending_responses()
    g5 = got["g5.xlarge"]
    assert (g5.on_demand, g5.spot, g5.spot_az, g5.fetched_at) == (1.006, 0.3387, "us-east-1c", NOW)
    assert g5.spot_saving == pytest.approx(1 - 0.3387 / 1.006)
    assert "Pricing API" in g5.source and "spot" in g5.source
    assert (got["t3.micro"].spot, got["t3.micro"].spot_az) == (0.0039, "us-east-1f")
    assert service.last_error is None


async def test_prices_come_from_the_caches_without_api_calls(tmp_path: Path) -> None:
    clients, clock = StubbedClients(), Clock()
    add_products(clients.stub("pricing"), "g4dn.xlarge", [product("g4dn.xlarge", "0.5260000000")])
    add_spot(
        clients.stub("ec2"),
        ["g4dn.xlarge"],
        [[spot_row("g4dn.xlarge", "us-east-1a", "0.2100", NOW)]],
    )
    service = make_service(clients, tmp_path, clock)
    first = await service.prices(["g4dn.xlarge"])
    assert service.cache_age() == 0.0
    clock.now += timedelta(minutes=5)
    # Nothing is queued now: any API call would fail the Stubber's "unexpected call" check.
    assert await service.prices(["g4dn.xlarge"]) == first
    assert service.cache_age() == 300.0

    # A new process (a new service on the same cache dir) reads on-demand prices from disk.
    other_clients = StubbedClients()
    add_spot(
        other_clients.stub("ec2"),
        ["g4dn.xlarge"],
        [[spot_row("g4dn.xlarge", "us-east-1b", "0.2000", NOW)]],
        StartTime=clock.now,
    )
    other = make_service(other_clients, tmp_path, clock)
    assert other.cache_age() == 300.0
    price = (await other.prices(["g4dn.xlarge"]))["g4dn.xlarge"]
    assert (price.on_demand, price.spot, price.spot_az) == (0.526, 0.2, "us-east-1b")
    assert price.fetched_at == NOW  # the older of the two fetches
    other_clients.stub("ec2").assert_no_pending_responses()


async def test_caches_expire(tmp_path: Path) -> None:
    clients, clock = StubbedClients(), Clock()
    pricing, ec2 = clients.stub("pricing"), clients.stub("ec2")
    add_products(pricing, "c5.large", [product("c5.large", "0.0850000000")])
    add_spot(ec2, ["c5.large"], [[spot_row("c5.large", "us-east-1a", "0.0400", NOW)]])
    service = make_service(clients, tmp_path, clock)
    await service.prices(["c5.large"])

    clock.now = NOW + timedelta(minutes=11)  # spot is stale, on-demand is not
    add_spot(
        ec2,
        ["c5.large"],
        [[spot_row("c5.large", "us-east-1a", "0.0410", clock.now)]],
        StartTime=clock.now,
    )
    assert (await service.prices(["c5.large"]))["c5.large"].spot == 0.041
    ec2.assert_no_pending_responses()

    clock.now = NOW + timedelta(days=7, minutes=1)  # both are stale
    add_products(pricing, "c5.large", [product("c5.large", "0.0800000000")])
    add_spot(
        ec2,
        ["c5.large"],
        [[spot_row("c5.large", "us-east-1a", "0.0420", clock.now)]],
        StartTime=clock.now,
    )
    price = (await service.prices(["c5.large"]))["c5.large"]
    assert (price.on_demand, price.spot, price.fetched_at) == (0.08, 0.042, clock.now)
    pricing.assert_no_pending_responses()
    ec2.assert_no_pending_responses()
    assert service.cache_age() == 0.0


async def test_unpriceable_types_are_absent_and_not_asked_again(tmp_path: Path) -> None:
    clients, clock = StubbedClients(), Clock()
    add_products(clients.stub("pricing"), "x9.nonesuch", [])
    add_spot(clients.stub("ec2"), ["x9.nonesuch"], [[]])
    service = make_service(clients, tmp_path, clock)
    assert await service.prices(["x9.nonesuch"]) == {}
    clock.now += timedelta(minutes=1)
    assert await service.prices(["x9.nonesuch"]) == {}


async def test_spot_batches_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudsh.services.pricing as pricing_module

    monkeypatch.setattr(pricing_module, "SPOT_BATCH", 2)
    clients, clock = StubbedClients(), Clock()
    types = ["t3.micro", "t3.small", "t3.medium"]
    for t in types:
        add_products(clients.stub("pricing"), t, [product(t, "0.01")])
    add_spot(
        clients.stub("ec2"),
        ["t3.micro", "t3.small"],
        [[spot_row("t3.small", "us-east-1a", "0.004", NOW)]],
    )
    add_spot(
        clients.stub("ec2"), ["t3.medium"], [[spot_row("t3.medium", "us-east-1a", "0.005", NOW)]]
    )
    got = await make_service(clients, tmp_path, clock).prices(types)
    assert [got[t].spot for t in types] == [None, 0.004, 0.005]
    clients.stub("ec2").assert_no_pending_responses()


async def test_a_refused_request_is_a_clear_error(tmp_path: Path) -> None:
    clients = StubbedClients()
    clients.stub("pricing").add_client_error(
        "get_products",
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ml is not authorized",
        http_status_code=400,
    )
    add_spot(
        clients.stub("ec2"), ["g5.xlarge"], [[spot_row("g5.xlarge", "us-east-1a", "0.35", NOW)]]
    )
    service = make_service(clients, tmp_path, Clock())
    with pytest.raises(CloudshError) as info:
        await service.prices(["g5.xlarge"])
    assert str(info.value).startswith("cannot fetch prices: not allowed to call GetProducts")
    assert "pricing:GetProducts" in info.value.hint


async def test_expired_credentials_are_a_credentials_error(tmp_path: Path) -> None:
    clients = StubbedClients()
    clients.stub("ec2").add_client_error(
        "describe_spot_price_history",
        "RequestExpired",
        "Request has expired.",
        http_status_code=400,
    )
    add_products(clients.stub("pricing"), "g5.xlarge", [product("g5.xlarge", "1.006")])
    service = make_service(clients, tmp_path, Clock())
    with pytest.raises(CredentialsError, match="cannot fetch prices: AWS rejected") as info:
        await service.prices(["g5.xlarge"])
    assert "aws configure" in info.value.hint


async def test_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    clients = StubbedClients(unstubbed=("ec2",))

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    # Fault injected at the botocore edge, before a request is sent (so without retries;
    # botocore's own retries against the dead port would take seconds).
    clients.register("before-call.ec2.DescribeSpotPriceHistory", unreachable)
    add_products(clients.stub("pricing"), "g5.xlarge", [product("g5.xlarge", "1.006")])
    service = make_service(clients, tmp_path, Clock())
    with pytest.raises(CloudshError, match="cannot fetch prices: cannot reach AWS") as info:
        await service.prices(["g5.xlarge"])
    assert "network" in info.value.hint
    with pytest.raises(CloudshError, match="cannot reach AWS"):
        await service.spot_history("g5.xlarge")


async def test_not_strict_returns_what_it_has(tmp_path: Path) -> None:
    clients, clock = StubbedClients(), Clock()
    pricing, ec2 = clients.stub("pricing"), clients.stub("ec2")
    add_products(pricing, "g6.xlarge", [product("g6.xlarge", "0.8048000000")])
    add_spot(ec2, ["g6.xlarge"], [[spot_row("g6.xlarge", "us-east-1a", "0.2900", NOW)]])
    service = make_service(clients, tmp_path, clock)
    await service.prices(["g6.xlarge"])

    # Both caches stale and both APIs failing: the stale prices are still worth showing.
    clock.now = NOW + timedelta(days=8)
    pricing.add_client_error(
        "get_products", "ThrottlingException", "Rate exceeded", http_status_code=400
    )
    ec2.add_client_error(
        "describe_spot_price_history", "InternalError", "oops", http_status_code=400
    )
    got = await service.prices(["g6.xlarge", "g5.xlarge"], strict=False)
    assert list(got) == ["g6.xlarge"]
    assert (got["g6.xlarge"].on_demand, got["g6.xlarge"].spot, got["g6.xlarge"].fetched_at) == (
        0.8048,
        0.29,
        NOW,
    )
    assert service.last_error is not None and "cannot fetch prices" in str(service.last_error)

    # Nothing cached at all: empty, never an exception.
    empty = StubbedClients()
    empty.stub("pricing").add_client_error(
        "get_products", "AccessDeniedException", "no", http_status_code=400
    )
    empty.stub("ec2").add_client_error(
        "describe_spot_price_history", "UnauthorizedOperation", "no", http_status_code=403
    )
    fresh = make_service(empty, tmp_path / "other", Clock())
    assert await fresh.prices(["g5.xlarge"], strict=False) == {}
    assert fresh.cache_age() is None


async def test_spot_history_covers_every_az_in_time_order(tmp_path: Path) -> None:
    clients, clock = StubbedClients(), Clock()
    h = timedelta(hours=1)
    add_spot(
        clients.stub("ec2"),
        ["p3.2xlarge"],
        [
            [
                spot_row("p3.2xlarge", "us-east-1b", "0.9300", NOW - 2 * h),
                spot_row("p3.2xlarge", "us-east-1a", "0.9100", NOW - 30 * h),
            ],
            [spot_row("p3.2xlarge", "us-east-1a", "0.9200", NOW - 2 * h)],
        ],
        StartTime=NOW - timedelta(days=2),
        EndTime=NOW,
    )
    points = await make_service(clients, tmp_path, clock).spot_history("p3.2xlarge", days=2)
    assert [(p.az, p.price, p.at) for p in points] == [
        ("us-east-1a", 0.91, NOW - 30 * h),
        ("us-east-1a", 0.92, NOW - 2 * h),
        ("us-east-1b", 0.93, NOW - 2 * h),
    ]
    assert all(p.instance_type == "p3.2xlarge" for p in points)


def test_hourly_cost_uses_spot_for_spot_boxes_when_known() -> None:
    price = Price("g5.xlarge", on_demand=1.006, spot=0.35, spot_az="us-east-1a")
    assert hourly_cost(price, "spot") == 0.35
    assert hourly_cost(price, "on-demand") == 1.006
    assert hourly_cost(Price("g5.xlarge", on_demand=1.006), "spot") == 1.006
    assert hourly_cost(None, "spot") is None


# -- the sandbox's price source ----------------------------------------------------------


def test_sandbox_list_prices_are_labelled_and_complete() -> None:
    source = SandboxOnDemandSource()
    assert sandbox_prices.PRICES_DATE in source.label and "us-east-1" in source.label
    got = source.fetch(["g5.xlarge", "t3.micro", "x9.nonesuch"])
    assert got == {"g5.xlarge": 1.006, "t3.micro": 0.0104}
    expected = (
        [f"t3.{s}" for s in ("micro", "small", "medium", "large", "xlarge", "2xlarge")]
        + [
            f"{f}.{s}"
            for f in ("m5", "m6i", "c5")
            for s in ("large", "xlarge", "2xlarge", "4xlarge")
        ]
        + [f"g4dn.{s}" for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge")]
        + [
            f"{f}.{s}"
            for f in ("g5", "g6")
            for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge")
        ]
        + ["g5.48xlarge", "p3.2xlarge", "p3.8xlarge", "p3.16xlarge", "p4d.24xlarge", "p5.48xlarge"]
    )
    assert set(expected) <= set(sandbox_prices.LIST_PRICES)
    # Bigger sizes of a family cost more.
    assert sandbox_prices.LIST_PRICES["g4dn.xlarge"] < sandbox_prices.LIST_PRICES["g4dn.12xlarge"]


def test_sandbox_spot_history_is_deterministic_hourly_and_plausible() -> None:
    start, end = NOW - timedelta(days=7), NOW
    for name, od in sandbox_prices.LIST_PRICES.items():
        gpu = name.split(".")[0] in ("g4dn", "g5", "g6", "p3", "p4d", "p5")
        for az in sandbox_prices.SANDBOX_AZS:
            history = sandbox_prices.spot_price_history(name, az, start, end)
            assert history == sandbox_prices.spot_price_history(name, az, start, end)
            assert history[0][0] <= start < history[0][0] + timedelta(hours=1)
            assert history[-1][0] <= end
            assert all(b[0] - a[0] == timedelta(hours=1) for a, b in pairwise(history))
            assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t, _ in history)
            for _, usd in history:
                assert 0 < usd < od
                if gpu:
                    assert 0.55 - 1e-3 <= 1 - usd / od <= 0.75 + 1e-3
    # AZs differ, and an hour's price does not depend on the window asked for.
    a = sandbox_prices.spot_price_history("g5.xlarge", "us-east-1a", start, end)
    b = sandbox_prices.spot_price_history("g5.xlarge", "us-east-1b", start, end)
    assert [p for _, p in a] != [p for _, p in b]
    inner = sandbox_prices.spot_price_history(
        "g5.xlarge", "us-east-1a", NOW - timedelta(hours=5), NOW
    )
    assert inner == a[-len(inner) :]
    assert len({p for _, p in a}) > 10  # it moves
    assert sandbox_prices.spot_price_history("x9.nonesuch", "us-east-1a", start, end) == []
    # Naive datetimes are UTC; start == end gives the price in force then.
    now = sandbox_prices.spot_price_history(
        "g5.xlarge", "us-east-1a", NOW.replace(tzinfo=None), NOW
    )
    assert now == [a[-1]]


async def test_sandbox_prices_through_the_service(tmp_path: Path) -> None:
    clients, clock = StubbedClients(sandbox=True), Clock()
    # Answer DescribeSpotPriceHistory the way the sandbox does, from its own spot market.
    rows = [
        spot_row("g5.xlarge", az, f"{usd:.6f}", at)
        for az in sandbox_prices.SANDBOX_AZS
        for at, usd in sandbox_prices.spot_price_history("g5.xlarge", az, NOW, NOW)
    ]
    add_spot(clients.stub("ec2"), ["g5.xlarge"], [rows])
    service = PricingService(
        clients, "us-east-1", SandboxOnDemandSource(), tmp_path,
        spot=SandboxSpotSource(clients, "us-east-1"), clock=clock,
    )
    price = (await service.prices(["g5.xlarge"]))["g5.xlarge"]
    assert price.on_demand == 1.006
    assert price.spot == min(float(r["SpotPrice"]) for r in rows)
    assert price.spot_az in sandbox_prices.SANDBOX_AZS
    assert sandbox_prices.PRICES_SOURCE in price.source and "simulated" in price.source


@pytest.mark.sandbox
async def test_the_sandbox_cloud_serves_its_spot_market(sandbox: Any, tmp_path: Path) -> None:
    env = sandbox.env
    target = AwsTarget(
        region=env["AWS_DEFAULT_REGION"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        access_key_id=env["AWS_ACCESS_KEY_ID"],
        secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        sandbox=True,
    )
    clients = ClientFactory(target)
    service = PricingService(
        clients, target.region, SandboxOnDemandSource(), tmp_path,
        spot=SandboxSpotSource(clients, target.region),
    )
    azs = [z["ZoneName"] for z in sandbox.ec2().describe_availability_zones()["AvailabilityZones"]]
    before = datetime.now(UTC)
    got = await service.prices(["g5.xlarge", "t3.micro", "x9.nonesuch"])
    after = datetime.now(UTC)
    assert set(got) == {"g5.xlarge", "t3.micro"}
    g5 = got["g5.xlarge"]
    # The cheapest AZ's price in force now (allowing for the hour turning mid-test).
    cheapest = {
        min((sandbox_prices.spot_price("g5.xlarge", az, at), az) for az in azs)  # type: ignore[type-var]
        for at in (before, after)
    }
    assert (g5.spot, g5.spot_az) in cheapest
    assert g5.on_demand == 1.006 and g5.spot is not None and g5.spot < g5.on_demand

    history = await service.spot_history("g5.xlarge", days=1)
    assert {p.az for p in history} == set(azs)
    assert [p.at for p in history] == sorted(p.at for p in history)
    one_az = [p for p in history if p.az == azs[0]]
    assert 24 <= len(one_az) <= 26
    assert all(b.at - a.at == timedelta(hours=1) for a, b in pairwise(one_az))


# -- why a price is missing --------------------------------------------------------------


async def test_a_denied_pricing_api_says_which_permission_and_keeps_spot(tmp_path: Path) -> None:
    clients = StubbedClients()
    clients.stub("pricing").add_client_error(
        "get_products",
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ml is not authorized to perform: pricing:GetProducts",
        http_status_code=400,
    )
    add_spot(
        clients.stub("ec2"), ["g5.xlarge"], [[spot_row("g5.xlarge", "us-east-1a", "0.35", NOW)]]
    )
    got = await make_service(clients, tmp_path, Clock()).prices(["g5.xlarge"], strict=False)
    g5 = got["g5.xlarge"]
    assert (g5.on_demand, g5.spot) == (None, 0.35)
    assert got.note.startswith("on-demand prices unavailable: not allowed to call GetProducts")
    assert "pricing:GetProducts" in got.note and "\n" not in got.note
    assert g5.note == got.note == got.why("g5.xlarge")
    assert got.unsold == frozenset()  # a refusal says nothing about what is sold


async def test_a_throttled_pricing_api_says_so(tmp_path: Path) -> None:
    clients = StubbedClients()
    clients.stub("pricing").add_client_error(
        "get_products", "ThrottlingException", "Rate exceeded", http_status_code=400
    )
    add_spot(clients.stub("ec2"), ["p5.48xlarge"], [[]])
    got = await make_service(clients, tmp_path, Clock()).prices(["p5.48xlarge"], strict=False)
    assert "p5.48xlarge" not in got
    assert "the Pricing API is throttling GetProducts requests (ThrottlingException)" in got.note
    assert "try again" in got.note
    assert got.why("p5.48xlarge").startswith("on-demand prices unavailable: ")
    assert got.missing["p5.48xlarge"].endswith("spot not offered in us-east-1")
    # Asked strictly (as `spot_history` and callers that must have a price are), it raises.
    clients.stub("pricing").add_client_error(
        "get_products", "ThrottlingException", "Rate exceeded", http_status_code=400
    )
    add_spot(clients.stub("ec2"), ["p5.48xlarge"], [[]])
    with pytest.raises(CloudshError, match="throttling") as info:
        await make_service(clients, tmp_path / "strict", Clock()).prices(["p5.48xlarge"])
    assert "try again" in info.value.hint


async def test_an_unreachable_pricing_endpoint_is_named(tmp_path: Path) -> None:
    clients = StubbedClients(unstubbed=("pricing",))

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://api.pricing.us-east-1.amazonaws.com/")

    clients.register("before-call.pricing.GetProducts", unreachable)
    add_spot(clients.stub("ec2"), ["g5.xlarge"], [[spot_row("g5.xlarge", "us-east-1a", "0.35", NOW)]])
    got = await make_service(clients, tmp_path, Clock()).prices(["g5.xlarge"], strict=False)
    assert got["g5.xlarge"].on_demand is None
    assert "cannot reach AWS" in got.note and "api.pricing.us-east-1.amazonaws.com" in got.note


async def test_an_empty_answer_means_not_sold_and_no_spot_means_not_offered(tmp_path: Path) -> None:
    clients = StubbedClients()
    pricing = clients.stub("pricing")
    add_products(pricing, "g6.xlarge", [product("g6.xlarge", "0.8048000000")])
    add_products(pricing, "p4d.24xlarge", [])  # the Pricing API knows no price here
    # Spot history answers for g6 only: p4d has no spot market here.
    add_spot(
        clients.stub("ec2"),
        ["g6.xlarge", "p4d.24xlarge"],
        [[spot_row("g6.xlarge", "us-east-1b", "0.29", NOW)]],
    )
    got = await make_service(clients, tmp_path, Clock()).prices(["g6.xlarge", "p4d.24xlarge"], strict=False)
    assert got.note == ""  # every source answered
    assert list(got) == ["g6.xlarge"] and got["g6.xlarge"].note == ""
    assert got.unsold == frozenset({"p4d.24xlarge"})
    why = got.why("p4d.24xlarge")
    assert why.startswith("not sold in us-east-1") and why.endswith("spot not offered in us-east-1")

    # On-demand known, spot not offered: the price says why its spot is missing.
    clients2 = StubbedClients()
    add_products(clients2.stub("pricing"), "p3.2xlarge", [product("p3.2xlarge", "3.06")])
    add_spot(clients2.stub("ec2"), ["p3.2xlarge"], [[]])
    p3 = (await make_service(clients2, tmp_path / "p3", Clock()).prices(["p3.2xlarge"]))["p3.2xlarge"]
    assert (p3.on_demand, p3.spot, p3.note) == (3.06, None, "spot not offered in us-east-1")


async def test_a_denied_spot_history_names_its_permission(tmp_path: Path) -> None:
    clients = StubbedClients()
    add_products(clients.stub("pricing"), "g5.xlarge", [product("g5.xlarge", "1.006")])
    clients.stub("ec2").add_client_error(
        "describe_spot_price_history", "UnauthorizedOperation", "no", http_status_code=403
    )
    got = await make_service(clients, tmp_path, Clock()).prices(["g5.xlarge"], strict=False)
    assert got["g5.xlarge"].on_demand == 1.006
    assert got.note.startswith("spot prices unavailable: not allowed to call DescribeSpotPriceHistory")
    assert "ec2:DescribeSpotPriceHistory" in got.note


async def test_every_az_keeps_its_own_spot_price(tmp_path: Path) -> None:
    clients = StubbedClients()
    add_products(clients.stub("pricing"), "g5.xlarge", [product("g5.xlarge", "1.006")])
    h = timedelta(hours=1)
    add_spot(
        clients.stub("ec2"),
        ["g5.xlarge"],
        [
            [
                spot_row("g5.xlarge", "us-east-1a", "0.4100", NOW - h),
                spot_row("g5.xlarge", "us-east-1a", "0.3000", NOW - 3 * h),  # older: history
                spot_row("g5.xlarge", "us-east-1c", "0.3387", NOW - 2 * h),
            ]
        ],
    )
    g5 = (await make_service(clients, tmp_path, Clock()).prices(["g5.xlarge"]))["g5.xlarge"]
    assert dict(g5.spot_by_az) == {"us-east-1a": 0.41, "us-east-1c": 0.3387}
    assert (g5.spot, g5.spot_az) == (0.3387, "us-east-1c")
    # A spot box pays its own AZ's price; an AZ without one falls back, and says so.
    assert box_hourly(g5, "spot", "us-east-1a") == (0.41, "")
    assert box_hourly(g5, "spot", "us-east-1c") == (0.3387, "")
    usd, note = box_hourly(g5, "spot", "us-east-1f")
    assert usd == 0.3387 and "us-east-1f" in note and "us-east-1c" in note
    assert box_hourly(g5, "on-demand", "us-east-1a") == (1.006, "")
    assert hourly_cost(g5, "spot", "us-east-1a") == 0.41


def test_ebs_prices_follow_the_region() -> None:
    vol = Volume("vol-1", "data", 100, "available", az="eu-central-1a", volume_type="gp3")
    here, frankfurt = ebs_prices("us-east-1"), ebs_prices("eu-central-1")
    # Published list prices: gp3 $0.08 in N. Virginia, $0.0952 in Frankfurt per GB-month.
    assert here.volume_gb_month("gp3") == 0.08 and frankfurt.volume_gb_month("gp3") == 0.0952
    assert volume_monthly(vol, "eu-central-1") == pytest.approx(9.52)
    assert volume_monthly(vol, "us-east-1") == pytest.approx(8.0)
    assert snapshot_monthly(100, "sa-east-1") > snapshot_monthly(100, "us-east-1")
    # Where the published list is the same, so is the price.
    assert ebs_prices("us-west-2").volume == here.volume
    assert EBS_PRICES_DATE in frankfurt.source and "eu-central-1" in frankfurt.source
    # Every region cloudsh offers has a price; one without its own list says whose it shows.
    for region in REGIONS:
        assert ebs_prices(region).volume_gb_month("gp2") > 0
    unlisted = ebs_prices("il-central-1")
    assert unlisted.volume == here.volume
    assert "il-central-1" in unlisted.source and "us-east-1's" in unlisted.source
    assert ipv4_hourly("eu-central-1") == ipv4_hourly("us-east-1") == 0.005


def test_storage_records_cost_at_their_regions_list_prices() -> None:
    from cloudsh.models import Snapshot
    from cloudsh.ops.volumes import snapshot_record, volume_record

    vol = Volume("vol-1", "data", 100, "available", az="eu-central-1a", volume_type="gp2")
    snap = Snapshot("snap-1", "s", "vol-1", 100, "completed")
    # `volumes` and `snapshots` print these records: gp2 $0.119 and snapshots $0.054 per
    # GB-month in Frankfurt, against $0.10 and $0.05 in N. Virginia.
    assert volume_record(vol, {}, "eu-central-1")["monthly_cost"] == 11.9
    assert volume_record(vol, {}, "us-east-1")["monthly_cost"] == 10.0
    assert snapshot_record(snap, {}, "eu-central-1")["monthly_cost"] == 5.4
    assert snapshot_record(snap, {}, "us-east-1")["monthly_cost"] == 5.0
