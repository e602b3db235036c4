"""The sandbox's remembered look-ups in moto's serializer answer byte for byte what moto
answers without them, on one cloud with every kind of resource cloudsh lists."""

from __future__ import annotations

import re
from typing import Any

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
]


def _answers(ec2: Any) -> list[str]:
    bodies: list[str] = []

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        # Each answer has its own request id; all else must match.
        bodies.append(re.sub(rb"<requestId>[^<]*</requestId>", b"", response_dict["body"]).decode())

    ec2.meta.events.register("before-parse.ec2.*", keep)
    try:
        for name, kwargs in CALLS:
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
    assert all("<Errors>" not in body for body in plain)
    for (name, _), a, b, c in zip(CALLS, plain, remembered, again, strict=True):
        assert a == b == c, name
    assert "198.51.100.7/32" in plain[CALLS.index(("describe_security_groups", {}))]
    assert plain[0].count("<instanceId>") == 7


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
