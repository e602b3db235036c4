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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


def install() -> None:
    """Remember the look-ups from now on (the sandbox daemon, once at start)."""
    from moto.core import serialize
    from moto.ec2.models.core import TaggedEC2Resource

    picker = serialize.XFormedAttributePicker
    if "_cloudsh_moto" in picker.__dict__:
        return
    original = {name: picker.__dict__.get(name) for name in ("__call__", "get_possible_keys")}
    for name, fn in _remembering_picker(picker).items():
        setattr(picker, name, fn)
    picker._cloudsh_moto = original  # type: ignore[attr-defined]
    TaggedEC2Resource._cloudsh_get_tags = TaggedEC2Resource.get_tags  # type: ignore[attr-defined]
    TaggedEC2Resource.get_tags = _tags_of_one(TaggedEC2Resource.get_tags)  # type: ignore[method-assign]


def uninstall() -> None:
    from moto.core import serialize
    from moto.ec2.models.core import TaggedEC2Resource

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


@contextmanager
def installed() -> Iterator[None]:
    install()
    try:
        yield
    finally:
        uninstall()
