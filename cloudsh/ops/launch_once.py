"""One box per launch: the same launch run twice at once, or again after Ctrl-C, never
makes a second box.

RunInstances takes a `ClientToken`: the same token again answers with the box the first
call made ("Ensuring idempotency in Amazon EC2 API requests",
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html). The token here
is derived from what the launch asks for (name, key pair, type, image, disk, market) and
the ids of earlier boxes of that name that are gone, so a new box after a terminated one
gets a new token. Each run also tags its box with a value of its own (`TAG_LAUNCH`): a
run that gets back a box tagged by another run lost the race and says so.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from cloudsh.errors import AWSError, CloudshError, UsageError
from cloudsh.models import Instance

#: Which run of `launch` made the box; "interrupted" once that run was stopped by Ctrl-C
#: before the box answered, so running the same launch again adopts it.
TAG_LAUNCH = "cloudsh:launch"
INTERRUPTED = "interrupted"


def client_token(name: str, key_name: str, itype: str, image_id: str, disk_gb: int, spot: bool,
                 earlier: Sequence[str]) -> str:
    """At most 64 ASCII characters, as EC2 allows."""
    what = "|".join([name, key_name, itype, image_id, str(disk_gb), str(spot), *sorted(earlier)])
    return hashlib.sha256(what.encode()).hexdigest()[:64]


def new_run() -> str:
    return uuid.uuid4().hex[:16]


def check_won(inst: Instance, name: str, run: str) -> None:
    """After RunInstances: the box is this run's, or another run of the same launch made it."""
    theirs = inst.tags.get(TAG_LAUNCH, run)
    if theirs != run:
        raise LostRace(
            f"another `launch {name}` made {inst.id} at the same time; this one made nothing",
            "use that box (`cloudsh ls`), or pick another name",
        )


class LostRace(CloudshError):
    """Another run of the same launch made the box: what this run made is that run's too."""


def lost_race(exc: AWSError, name: str) -> LostRace | None:
    """EC2's answer when the same token comes with other parameters (the other run's tag)."""
    if exc.code != "IdempotentParameterMismatch":
        return None
    return LostRace(
        f"another `launch {name}` is making that box at the same time; this one made nothing",
        "see it with `cloudsh ls` in a moment, or pick another name",
    )


def adoptable(clash: Instance, key_name: str, itype: str) -> Instance:
    """A box of this name left by an interrupted launch of the same key pair is adopted (its
    type must match); any other box of that name is a clash."""
    if clash.tags.get(TAG_LAUNCH) != INTERRUPTED or clash.key_name != key_name or clash.state not in ("pending", "running"):
        raise UsageError(
            f"an instance named {clash.name!r} already exists ({clash.id}, {clash.state})",
            "pick another name, or terminate that one first",
        )
    if clash.type != itype:
        raise UsageError(
            f"{clash.id} ({clash.name}) was left by an interrupted launch as a {clash.type}",
            f"`cloudsh launch {clash.name} --type {clash.type}` waits for it; `cloudsh terminate {clash.id}` ends it",
        )
    return clash
