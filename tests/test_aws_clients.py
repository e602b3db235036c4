"""cloudsh's boto3 clients: XML responses parsed in slices give what botocore gives; service
models load as plain dicts, once however many threads ask, and are cached before a client is
closed; clients of several regions share one model; listings follow every page."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.parsers
import botocore.session
import pytest

from cloudsh.config import Settings
from cloudsh.root import sandbox_target
from cloudsh.services.aws import (
    INSTANCE_MEMBERS,
    AwsTarget,
    CachingLoader,
    ClientFactory,
    ParserFactory,
    SlicedEC2QueryParser,
    SlicedXMLParsing,
    prepare_models,
)
from cloudsh.services.ec2 import _instance
from tests.moto_cloud import fill
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox


def test_sliced_parsing_gives_what_botocore_gives(sandbox: Sandbox) -> None:
    bodies: list[bytes] = []
    ours = ClientFactory(sandbox_target(Settings.load())).client("ec2")
    ours.meta.events.register("before-parse.ec2.*", lambda response_dict, **_: bodies.append(response_dict["body"]))
    stock = sandbox.ec2()
    kwargs: dict[str, Any] = {"MaxResults": 100}
    got, want = ours.describe_instance_types(**kwargs), stock.describe_instance_types(**kwargs)
    # Big enough to be parsed in several slices, else this would prove nothing.
    assert len(bodies[-1]) > 2 * SlicedXMLParsing.SLICE
    assert isinstance(ours._endpoint._response_parser_factory.create_parser("ec2"), SlicedXMLParsing)
    for answer in (got, want):
        answer.pop("ResponseMetadata")
    assert got == want and len(got["InstanceTypes"]) > 50


def test_broken_xml_is_botocores_parse_error() -> None:
    parser = ParserFactory().create_parser("ec2")
    body = b"<DescribeInstancesResponse>" + b"<item>" * 40_000  # never closed
    assert len(body) > SlicedXMLParsing.SLICE
    with pytest.raises(botocore.parsers.ResponseParserError):
        parser._parse_xml_string_to_dom(body)


def test_models_load_as_plain_dicts_equal_to_botocores(tmp_path: Path) -> None:
    stock = botocore.loaders.Loader()
    ours = CachingLoader(tmp_path, prepared=tmp_path / "none")
    for service, kind in (("ec2", "service-2"), ("ec2", "paginators-1"), ("pricing", "service-2")):
        got, want = ours.load_service_model(service, kind), stock.load_service_model(service, kind)
        assert got == want
        assert type(got) is dict and all(type(v) is dict for v in got.values() if isinstance(v, dict))
    ours.flush()


def test_a_client_closes_only_once_its_models_are_cached(tmp_path: Path) -> None:
    target = AwsTarget(region="us-east-1", endpoint_url="http://127.0.0.1:9", access_key_id="x", secret_access_key="y")
    clients = ClientFactory(target, cache_dir=tmp_path, prepared_models=tmp_path / "none")
    clients.client("ec2")
    clients.close()
    cached = list((tmp_path / "botocore-models").glob("*-ec2-latest.pickle"))
    assert len(cached) == 1 and not list((tmp_path / "botocore-models").glob("*.tmp"))
    again = ClientFactory(target, cache_dir=tmp_path).client("ec2")  # the next process, in effect
    assert again.meta.service_model.operation_model("DescribeInstances").name == "DescribeInstances"


def test_a_first_start_reads_the_models_prepared_at_install(tmp_path: Path) -> None:
    prepared, cache = tmp_path / "prepared", tmp_path / "cache"
    [written] = prepare_models(prepared)
    assert prepare_models(prepared) == []  # kept, not written again
    ours = CachingLoader(cache, prepared=prepared)
    assert ours.load_service_model("ec2", "service-2") == botocore.loaders.Loader().load_service_model("ec2", "service-2")
    ours.flush()
    assert not cache.exists()  # nothing parsed, so nothing to cache
    written.write_bytes(b"not a pickle")  # an unreadable one is parsed and cached as usual
    assert CachingLoader(cache, prepared=prepared).load_service_model("ec2", "service-2")["metadata"]["serviceId"] == "EC2"


class _Reads(dict[str, Any]):
    """A raw answer that notes which of its members are read."""

    read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)


def test_instances_are_parsed_for_what_cloudsh_reads(moto_ec2: Any) -> None:
    fill(moto_ec2)
    bodies: list[dict[str, Any]] = []
    moto_ec2.meta.events.register("before-parse.ec2.DescribeInstances", lambda response_dict, **_: bodies.append(response_dict))
    moto_ec2.describe_instances()
    shape = moto_ec2.meta.service_model.operation_model("DescribeInstances").output_shape

    def instances(parser: Any) -> list[dict[str, Any]]:
        parsed = parser.parse(bodies[0], shape)
        return [i for r in parsed["Reservations"] for i in r["Instances"]]

    full, ours = instances(botocore.parsers.EC2QueryParser()), instances(SlicedEC2QueryParser())
    # Every member `_instance` reads is one the narrowed parse keeps...
    _Reads.read = set()
    for raw in full:
        _instance(_Reads(raw))
    assert {"InstanceId", "Tags", "BlockDeviceMappings", "InstanceLifecycle"} <= _Reads.read <= INSTANCE_MEMBERS
    # ...so the records are the same, and what nobody reads was skipped.
    assert [_instance(raw) for raw in ours] == [_instance(raw) for raw in full]
    assert len(full) == 7 and any(i.get("InstanceLifecycle") == "spot" for i in ours)
    assert all("NetworkInterfaces" in i for i in full)
    assert not any("NetworkInterfaces" in i for i in ours)


def test_clients_of_two_regions_share_model_and_class_but_each_signs_for_its_region(sandbox: Sandbox) -> None:
    clients = ClientFactory(sandbox_target(Settings.load()))
    home, other = clients.client("ec2", "us-east-1"), clients.client("ec2", "eu-west-1")
    assert type(home) is type(other) and home.meta.service_model is other.meta.service_model
    scopes: list[str] = []
    for client in (home, other):
        client.meta.events.register("before-send.ec2.*", lambda request, **_: scopes.append(request.headers["Authorization"].decode()))
    zones = [z["RegionName"] for c in (home, other) for z in c.describe_availability_zones()["AvailabilityZones"][:1]]
    assert zones == ["us-east-1", "eu-west-1"]
    assert "/us-east-1/ec2/" in scopes[0] and "/eu-west-1/ec2/" in scopes[1]
    # A session cloudsh did not make (say, boto3's in the IPython prompt) builds its own, as botocore does.
    plain = botocore.session.Session()
    a, b = (plain.create_client("ec2", region_name=r, endpoint_url="http://127.0.0.1:9", aws_access_key_id="x",
                                aws_secret_access_key="y") for r in ("us-east-1", "eu-west-1"))
    assert type(a) is not type(b) and a.meta.service_model is not b.meta.service_model


class _CountingFiles(botocore.loaders.JSONFileLoader):  # type: ignore[misc]
    reads: list[str] = []

    def load_file(self, file_path: str) -> Any:
        self.reads.append(file_path)
        return super().load_file(file_path)


def test_a_model_asked_for_by_many_threads_at_once_is_read_once(tmp_path: Path) -> None:
    loader = CachingLoader(tmp_path, prepared=tmp_path / "none")
    loader.file_loader = _CountingFiles()
    start = threading.Barrier(12)

    def first_call() -> Any:
        start.wait()
        return loader.load_service_model("ec2", "paginators-1")

    with ThreadPoolExecutor(12) as pool:
        models = list(pool.map(lambda _: first_call(), range(12)))
    assert all(m is models[0] for m in models) and "DescribeVolumes" in models[0]["pagination"]
    reads = [f for f in _CountingFiles.reads if "paginators-1" in f]
    assert len(reads) == len(set(reads)) >= 1, reads


def test_listings_follow_next_token_to_the_last_page(moto_ec2: Any) -> None:
    from cloudsh.services.ec2 import EC2Service

    image = moto_ec2.describe_images()["Images"][0]["ImageId"]
    for _ in range(7):
        moto_ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    ec2 = EC2Service(ClientFactory(AwsTarget(region="us-east-1", access_key_id="testing", secret_access_key="testing")))
    pages: list[int] = []
    ec2.clients.client("ec2").meta.events.register(
        "after-call.ec2.DescribeInstances", lambda parsed, **_: pages.append(len(parsed["Reservations"])))
    reservations = ec2._paginate_sync("describe_instances", "Reservations", MaxResults=5)
    assert pages == [5, 2] and len({r["ReservationId"] for r in reservations}) == 7
