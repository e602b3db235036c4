"""The sandbox's remembered look-ups in moto's serializer answer byte for byte what moto
answers without them, on one cloud with every kind of resource cloudsh lists."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest

from cloudsh.sandbox import fastser
from tests.moto_cloud import fill

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("describe_instances", {}),
    ("describe_instances", {"Filters": [{"Name": "tag:Name", "Values": ["box-1"]}]}),
    ("describe_volumes", {}),
    ("describe_snapshots", {"OwnerIds": ["self"]}),
    ("describe_images", {"Owners": ["self"]}),
    ("describe_security_groups", {}),
    ("describe_key_pairs", {}),
    ("describe_subnets", {}),
    ("describe_tags", {}),
    ("describe_network_interfaces", {}),
    ("describe_instances", {"InstanceIds": ["i-0123456789abcdef0"]}),  # an error answer
    ("describe_volumes", {"VolumeIds": ["vol-0123456789abcdef0"]}),
]


def _answers(ec2: Any) -> list[str]:
    bodies: list[str] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        # Each answer has its own request id; all else must match.
        bodies.append(re.sub(rb"<requestId>[^<]*</requestId>", b"", response_dict["body"]).decode())

    ec2.meta.events.register("before-parse.ec2.*", keep)
    try:
        for name, kwargs in CALLS:
            with contextlib.suppress(ec2.exceptions.ClientError):
                getattr(ec2, name)(**kwargs)
    finally:
        ec2.meta.events.unregister("before-parse.ec2.*", keep)
    return bodies


def test_remembered_lookups_answer_as_moto_does(moto_ec2: Any) -> None:
    ec2 = moto_ec2
    fill(ec2)
    plain = _answers(ec2)
    with fastser.installed():
        remembered = _answers(ec2)
        again = _answers(ec2)  # from the remembered look-ups this time
    assert len(plain) == len(CALLS)
    assert ["<Errors>" in body for body in plain] == [False] * (len(CALLS) - 2) + [True, True]
    for (name, _), a, b, c in zip(CALLS, plain, remembered, again, strict=True):
        assert a == b == c, name
    assert "198.51.100.7/32" in plain[CALLS.index(("describe_security_groups", {}))]
    assert plain[0].count("<instanceId>") == 7
    assert "/>" in plain[0] and "1 &amp; &lt;2&gt;" in plain[0]  # short empty elements, escapes


def test_install_is_undone() -> None:
    from moto.core import serialize
    from moto.ec2.models.core import TaggedEC2Resource

    before = (serialize.XFormedAttributePicker.get_possible_keys, serialize.XFormedAttributePicker.__call__,
              TaggedEC2Resource.get_tags)
    with fastser.installed():
        assert serialize.XFormedAttributePicker.get_possible_keys is not before[0]
        assert TaggedEC2Resource.get_tags is not before[2]
    after = (serialize.XFormedAttributePicker.get_possible_keys, serialize.XFormedAttributePicker.__call__,
             TaggedEC2Resource.get_tags)
    assert after == before


@pytest.mark.parametrize("body", [
    {"R": {"@xmlns": "urn:x", "a": None, "b": [], "c": [1, 2.5, True, "t"], "d": {"#text": "x & y", "@k": 'say "hi"'}}},
    {"R": {"e": (), "j": [[1, 2], (3,)], "k": 0, "f": [{"g": "<"}, None], "h": {"@k": "it's \"both\"\n", "#text": ""}, "i": {"#text": None}}},
    {"R": {"a": b"bytes"}},  # xmltodict's own way: decoded
    {"R": {"#comment": "note", "a": "1"}},
    {"R": {"bad name": "1"}},  # refused by xmltodict
    {"R": "1", "S": "2"},  # two roots: refused
])
def test_xml_written_as_xmltodict_writes_it(body: dict[str, Any]) -> None:
    import xmltodict

    def stock(b: Any) -> str:
        return str(xmltodict.unparse(b, full_document=True, short_empty_elements=True))

    try:
        want: str | type[Exception] = stock(body)
    except ValueError:
        want = ValueError
    try:
        got: str | type[Exception] = fastser._unparse(body, stock)
    except ValueError:
        got = ValueError
    assert got == want


def test_remembered_dispatch_answers_as_moto_does() -> None:
    from moto.core import responses
    from moto.ec2.responses import EC2Response
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    hosts = [None, "moto_api", "ec2", "ec2.eu-west-1.amazonaws.com", "ssm.us-east-1.amazonaws.com",
             "127.0.0.1:5000", "s3.amazonaws.com"]
    classes = [EC2Response, responses.BaseResponse]

    def answers() -> tuple[list[object], list[list[str]]]:
        return ([app.get_backend_for_host(h) for h in hosts],
                [responses.method_names_from_class(c) for c in classes])  # type: ignore[attr-defined]

    plain = answers()
    before = (DomainDispatcherApplication.get_backend_for_host, responses.method_names_from_class)  # type: ignore[attr-defined]
    with fastser.installed():
        assert DomainDispatcherApplication.get_backend_for_host is not before[0]
        remembered, again = answers(), answers()
    assert plain == remembered == again
    assert plain[0][3] == "ec2" and "describe_instances" in plain[1][0]
    assert (DomainDispatcherApplication.get_backend_for_host, responses.method_names_from_class) == before  # type: ignore[attr-defined]
