"""EC2's tag restrictions, which moto does not fully check.

"Tag your Amazon EC2 resources", Tag restrictions
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions):
at most 50 user tags per resource, keys up to 128 characters, values up to 256. EC2
refuses more with `TagLimitExceeded` ("The maximum number of Tags for a resource has been
reached.") and a longer key or value with `InvalidParameterValue` ("Tag value exceeds the
maximum length of 256 characters"). moto counts the 50 on `CreateTags` only, and never
checks lengths; this checks lengths on every call that carries tags, and the count of a
resource's tags given at creation (`TagSpecification`).
"""

from __future__ import annotations

import re
from collections import Counter

from cloudsh.sandbox.wsgi import Ec2Error

MAX_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256

#: `Tag.N.Key` (CreateTags) and `TagSpecification.N.Tag.M.Key` (RunInstances, CreateVolume, …).
_TAG = re.compile(r"^((?:TagSpecification\.\d+\.)?)Tag\.\d+\.(Key|Value)$")


def check(params: dict[str, str]) -> None:
    """Refuse, as EC2 does, a request whose tags break EC2's restrictions."""
    per_spec: Counter[str] = Counter()
    for name, text in params.items():
        found = _TAG.match(name)
        if found is None:
            continue
        spec, part = found.groups()
        limit = MAX_KEY if part == "Key" else MAX_VALUE
        if len(text) > limit:
            raise Ec2Error(
                "InvalidParameterValue", f"Tag {part.lower()} exceeds the maximum length of {limit} characters"
            )
        if spec and part == "Key" and not text.startswith("aws:"):
            per_spec[spec] += 1
    if any(n > MAX_TAGS for n in per_spec.values()):
        raise Ec2Error("TagLimitExceeded", "The maximum number of Tags for a resource has been reached.")
