"""moto's response serializer, with its look-ups remembered and tags read directly.

moto answers every call by walking the botocore output shape; for each member of each
object it asks six alias providers which attribute names to try, then matches the
member's path against every response transformer of the service (about twenty for EC2)
with `str.endswith`. Both answers depend only on things that repeat: the names to try on
the object's class, the member's key, its shape and the shape's parent; the transformer
on the member's path (and on the transformer table, which moto only ever adds to). Yet
they are worked out again for every member of every object: for `DescribeInstances` of
300 boxes that is most of the serializer's time. Each object's tags are found by matching
every tag of the cloud against its id, which makes a listing quadratic in its size.

`install` remembers both look-ups and reads an object's tags from its own entry. The
names tried, their order, the transformer chosen, the tags and the values picked stay
moto's own, so every answer is byte for byte the same (tests/test_sandbox_fastser.py
compares the two on the same cloud). The sandbox daemon installs it at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from xml.sax.saxutils import escape, quoteattr

_MAX = 50_000  # remembered answers of each kind; the EC2 model has far fewer


def _remembering_picker(picker: Any) -> dict[str, Any]:
    """Replacements for `picker`'s `__call__` and `get_possible_keys`."""
    from moto.core.utils import MISSING, get_value  # type: ignore[attr-defined]

    compute_keys = picker.get_possible_keys
    names: dict[tuple[Any, ...], tuple[str, ...]] = {}
    transforms: dict[tuple[int, int, str], str | None] = {}
    tables: dict[int, dict[str, Any]] = {}  # keeps each table alive while its id is a key

    def get_possible_keys(self: Any, context: Any) -> Any:
        obj = context.obj
        # An object that carries its own aliases (moto's `Meta`) is worked out each time.
        if hasattr(obj, "Meta"):
            return compute_keys(self, context)
        shape = context.shape
        key = (type(obj), context.key, shape, getattr(shape, "parent", None), tuple(self.alias_providers))
        found = names.get(key)
        if found is None:
            if len(names) >= _MAX:
                names.clear()
            found = names[key] = tuple(compute_keys(self, context))
        return found

    def transform_path(table: dict[str, Any], key_path: str) -> str | None:
        key = (id(table), len(table), key_path)
        if key in transforms:
            return transforms[key]
        if len(transforms) >= _MAX:
            transforms.clear()
        tables[id(table)] = table
        found = next((path for path in table if key_path.endswith(path)), None)
        transforms[key] = found
        return found

    def call(self: Any, context: Any) -> Any:
        obj = context.obj
        for possible_key in self.get_possible_keys(context):
            value = get_value(obj, possible_key, MISSING)
            if value is not MISSING:
                break
        else:
            value = None
        table = self.response_transformers
        if table:
            path = transform_path(table, f"{context.key_path}.{context.key}")
            if path is not None:
                value = table[path](value)
        return value

    return {"__call__": call, "get_possible_keys": get_possible_keys}


def _tags_of_one(original: Any) -> Any:
    """`TaggedEC2Resource.get_tags`, read from the resource's own entry of the tag table.
    moto's asks `describe_tags` with a resource-id filter, which matches every tag of every
    resource against that id: once per object, so a listing is quadratic in the cloud's
    size. Ids hold no wildcard, so that filter matches exactly the resource's own entry;
    the rows are built as `describe_tags` builds them, in the same order."""
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self: Any) -> list[dict[str, str]]:
        rid = self.id
        if not rid or not isinstance(rid, str) or any(c in rid for c in "*?["):
            return original(self)  # type: ignore[no-any-return]
        own = self.ec2_backend.tags.get(rid) or {}
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
        return [{"resource_id": rid, "key": k, "value": v, "resource_type": kind} for k, v in own.copy().items()]

    return get_tags


class _Unusual(Exception):
    """Something `_unparse` leaves to xmltodict (comments, bytes, odd names, several roots)."""


_BAD_NAME = re.compile(r"""^[?!]|[<>/"'=\s]""")


def _text(value: Any) -> str:
    """xmltodict's `_convert_value_to_string`, bytes left to xmltodict."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes | bytearray | memoryview):
        raise _Unusual
    return str(value)


_NAMES: set[str] = set()  # element and attribute names seen to be well-formed


def _name(key: Any) -> str:
    if key in _NAMES:
        return key  # type: ignore[no-any-return]
    if not isinstance(key, str) or key == "#comment" or _BAD_NAME.search(key):
        raise _Unusual
    _NAMES.add(key)
    return key


class _Writer:
    """`XMLGenerator` with short empty elements, writing into a list."""

    __slots__ = ("parts", "pending")

    def __init__(self) -> None:
        self.parts = ['<?xml version="1.0" encoding="utf-8"?>\n']
        self.pending = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if self.pending:
            self.parts.append(">")
        self.parts.append("<" + name)
        for key, value in attrs.items():
            self.parts.append(f" {key}={quoteattr(value)}")
        self.pending = True

    def end(self, name: str) -> None:
        if self.pending:
            self.parts.append("/>")
            self.pending = False
        else:
            self.parts.append(f"</{name}>")

    def characters(self, content: str) -> None:
        if content:
            if self.pending:
                self.parts.append(">")
                self.pending = False
            self.parts.append(escape(content))

    def leaf(self, name: str, text: str) -> None:
        """start, characters, end of an element with only text: most of an answer."""
        if self.pending:
            self.parts.append(">")
            self.pending = False
        self.parts.append(f"<{name}>{escape(text)}</{name}>" if text else f"<{name}/>")


def _emit(out: _Writer, key: Any, value: Any, depth: int) -> None:
    """xmltodict's `_emit` for what moto's EC2 answers hold (no comments, namespaces,
    pretty printing or bytes): the same elements, attributes and text, in the same order."""
    name = _name(key)
    if value is None or isinstance(value, str | int | float):
        out.leaf(name, "" if value is None else _text(value))
        return
    if not hasattr(value, "__iter__") or isinstance(value, bytes | bytearray | memoryview | dict):
        value = [value]
    for index, item in enumerate(value):
        if depth == 0 and index > 0:
            raise _Unusual
        if item is None or not isinstance(item, dict):
            out.leaf(name, "" if item is None else _text(item))
            continue
        text = None
        attrs: dict[str, str] = {}
        children = []
        for child, child_value in item.items():
            if child == "#text":
                text = None if child_value is None else _text(child_value)
            elif isinstance(child, str) and child.startswith("@"):
                if child == "@xmlns" and isinstance(child_value, dict):
                    raise _Unusual
                attrs[_name(child[1:])] = "" if child_value is None else _text(child_value)
            elif not (isinstance(child_value, list) and not child_value):
                children.append((child, child_value))
        out.start(name, attrs)
        for child, child_value in children:
            _emit(out, child, child_value, depth + 1)
        if text is not None:
            out.characters(text)
        out.end(name)


def _unparse(body: Any, original: Any) -> str:
    """What `xmltodict.unparse(body, full_document=True, short_empty_elements=True)`
    answers, written without SAX's per-call overhead; the unusual goes to `original`."""
    try:
        if not isinstance(body, dict) or len(body) != 1:
            raise _Unusual
        out = _Writer()
        for key, value in body.items():
            _emit(out, key, value, 0)
        return "".join(out.parts)
    except _Unusual:
        return original(body)  # type: ignore[no-any-return]


def _quicker_body(original: Any) -> Any:
    """`EC2Serializer._serialize_body` through `_unparse` (not when pretty-printing)."""

    def serialize_body(self: Any, body: Any) -> str:
        if self.pretty_print:
            return original(self, body)  # type: ignore[no-any-return]
        return _unparse(body, lambda b: original(self, b))

    return serialize_body


def install() -> None:
    """Remember the look-ups from now on, the dispatch's too (`fastdispatch`): the sandbox
    daemon, once at start."""
    from moto.core import serialize
    from moto.ec2.models.core import TaggedEC2Resource

    from cloudsh.sandbox import fastdispatch

    fastdispatch.install()
    picker = serialize.XFormedAttributePicker
    if "_cloudsh_moto" in picker.__dict__:
        return
    original = {name: picker.__dict__.get(name) for name in ("__call__", "get_possible_keys")}
    for name, fn in _remembering_picker(picker).items():
        setattr(picker, name, fn)
    picker._cloudsh_moto = original  # type: ignore[attr-defined]
    TaggedEC2Resource._cloudsh_get_tags = TaggedEC2Resource.get_tags  # type: ignore[attr-defined]
    serializer = serialize.EC2Serializer
    serializer._cloudsh_body = serializer._serialize_body  # type: ignore[attr-defined]
    serializer._serialize_body = _quicker_body(serializer._serialize_body)  # type: ignore[method-assign]
    TaggedEC2Resource.get_tags = _tags_of_one(TaggedEC2Resource.get_tags)  # type: ignore[method-assign]


def uninstall() -> None:
    from moto.core import serialize
    from moto.ec2.models.core import TaggedEC2Resource

    from cloudsh.sandbox import fastdispatch

    fastdispatch.uninstall()
    picker = serialize.XFormedAttributePicker
    original = picker.__dict__.get("_cloudsh_moto")
    if original is None:
        return
    for name, fn in original.items():
        if fn is None:
            delattr(picker, name)
        else:
            setattr(picker, name, fn)
    del picker._cloudsh_moto  # type: ignore[attr-defined]
    TaggedEC2Resource.get_tags = TaggedEC2Resource._cloudsh_get_tags  # type: ignore[attr-defined,method-assign]
    del TaggedEC2Resource._cloudsh_get_tags  # type: ignore[attr-defined]
    serializer = serialize.EC2Serializer
    serializer._serialize_body = serializer._cloudsh_body  # type: ignore[attr-defined,method-assign]
    del serializer._cloudsh_body  # type: ignore[attr-defined]


@contextmanager
def installed() -> Iterator[None]:
    install()
    try:
        yield
    finally:
        uninstall()
