"""cloudsh's boto3 clients: XML responses parsed in slices give what botocore gives; service
models load as plain dicts and are cached before a client is closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.parsers
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
