"""cloudsh's boto3 clients: XML responses parsed in slices give what botocore gives."""

from __future__ import annotations

from typing import Any

import botocore.parsers
import pytest

from cloudsh.config import Settings
from cloudsh.root import sandbox_target
from cloudsh.services.aws import ClientFactory, ParserFactory, SlicedXMLParsing
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
