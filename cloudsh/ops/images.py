"""Images: freeze a box into an AMI, list and delete them; and what a box has been backed
up as (images and snapshots), for the terminate preview.

`plan_*` does every check that can fail before anything changes; the matching action
then changes the cloud, reporting progress through a callback.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudsh.errors import InvalidState, NotFound, UsageError
from cloudsh.models import (
    TAG_IMAGE_FAMILY,
    TAG_MANAGED,
    Image,
    Instance,
    Snapshot,
    job_tags,
    snapshot_monthly,
)
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.owners import check_acts_on
from cloudsh.ops.poll import wait_for_state
from cloudsh.ops.reach import wait_ssh
from cloudsh.services.backend import Backend
from cloudsh.services.ec2 import closest

TAG_SOURCE = "cloudsh:source-instance"
TAG_SOURCE_NAME = "cloudsh:source-name"
TAG_IMAGE = "cloudsh:image"

_IMAGE_NAME = re.compile(r"^[A-Za-z0-9()\[\]./'@_-]{3,128}$")


# -- images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreezePlan:
    instance: Instance
    image_name: str
    no_reboot: bool
    #: Jobs the box's tags say are running (a reboot stops them).
    running_jobs: tuple[str, ...] = ()

    @property
    def reboots(self) -> bool:
        return not self.no_reboot and self.instance.state == "running"

    def describe(self) -> str:
        if self.no_reboot:
            how = "without a reboot: files being written right now may be saved half-written"
        elif not self.reboots:
            how = f"from its {self.instance.state} disk"
        else:
            how = "rebooting it first for a consistent disk: its running programs stop"
            if self.running_jobs:
                how += f", jobs {', '.join(self.running_jobs)} among them (`cloudsh job resume` restarts them)"
        return f"freeze {self.instance.label} as image {self.image_name!r}, {how}"


async def plan_freeze(
    backend: Backend, inst: Instance, image_name: str | None, *, no_reboot: bool, by_id: Collection[str] = ()
) -> FreezePlan:
    """Every check before anything is made. Freezing reboots the box, so one cloudsh did not
    launch is frozen that way only when named by its id (`ops.owners`)."""
    check_acts_on([inst], "freeze", by_id=by_id, destructive=not no_reboot)
    if inst.state not in ("running", "stopped", "stopping"):
        raise InvalidState(
            f"cannot freeze {inst.label}: it is {inst.state}",
            "freeze a box that is running or stopped" if inst.state != "terminated" else "its disk is gone; launch a new box",
        )
    name = image_name or f"{inst.label}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    if not _IMAGE_NAME.match(name):
        raise UsageError(f"{name!r} is not a usable image name", "use 3-128 letters, digits and ()[]./'@_-")
    if any(i.name == name for i in await backend.ec2.images()):
        raise UsageError(f"you already have an image named {name!r}", "pick another name, or `cloudsh image delete` it first")
    running = tuple(j for j, t in job_tags(inst).items() if t.state in ("running", "starting"))
    return FreezePlan(inst, name, no_reboot, running)


async def freeze(backend: Backend, plan: FreezePlan, *, progress: Progress = quiet) -> Image:
    ec2, inst = backend.ec2, plan.instance
    progress(plan.describe())
    image_id = await ec2.create_image(
        inst.id,
        plan.image_name,
        no_reboot=plan.no_reboot,
        tags={"Name": plan.image_name, TAG_SOURCE: inst.id, TAG_SOURCE_NAME: inst.label, TAG_MANAGED: "1",
              # Its boxes run what this box runs (with its driver, if it had one).
              **({TAG_IMAGE_FAMILY: inst.image_family} if inst.image_family else {})},
    )

    async def state() -> str:
        img = await ec2.get_image(image_id)
        return img.state if img else "pending"

    async def tag_snapshots() -> Image | None:
        img = await ec2.get_image(image_id)
        if img is not None and img.snapshot_ids:
            await ec2.set_tags(img.snapshot_ids, {"Name": plan.image_name, TAG_IMAGE: image_id, TAG_SOURCE: inst.id})
        return img

    try:
        await wait_for_state(f"image {image_id}", state, {"available"}, timeout=3600, progress=progress)
    except asyncio.CancelledError:  # Ctrl-C: what was made is tagged as cloudsh's and named
        made = await tag_snapshots()
        snaps = ", ".join(made.snapshot_ids) if made and made.snapshot_ids else "none yet"
        progress(
            f"interrupted: image {image_id} ({plan.image_name}) is still being made from {inst.label}, tagged, "
            f"with its snapshots ({snaps}); it is kept: `cloudsh image delete {plan.image_name}` removes both"
        )
        raise
    img = await tag_snapshots()
    if img is None:
        raise NotFound(f"image {image_id} disappeared", "list images with `cloudsh images`")
    if plan.reboots:
        progress(f"waiting for {inst.label} to answer SSH again after the reboot")
        await wait_ssh(backend, inst)
    return img


async def find_image(backend: Backend, name_or_id: str) -> Image:
    """One of this account's images, by id or name."""
    mine = await backend.ec2.images()
    found = [i for i in mine if name_or_id == i.id] or [i for i in mine if name_or_id == i.name]
    if len(found) > 1:
        # Names are unique on EC2 today, but images registered elsewhere (or before) may share one.
        listed = "; ".join(f"{i.id} ({i.created:%Y-%m-%d %H:%M} UTC)" if i.created else i.id for i in found)
        raise UsageError(f"{len(found)} images are named {name_or_id!r}: {listed}", "name the one you mean by its id")
    if found:
        return found[0]
    guess = closest(name_or_id, [i.name for i in mine])
    raise NotFound(
        f"you have no image {name_or_id!r}",
        f"did you mean {guess}?" if guess else "list yours with `cloudsh images`",
    )


def _image_size(img: Image, snaps: dict[str, Snapshot]) -> int:
    return sum(snaps[s].size_gb for s in img.snapshot_ids if s in snaps)


async def image_records(backend: Backend) -> list[dict[str, Any]]:
    """`images --json`: name, id, state, then architecture, size and monthly storage cost."""
    images, snaps = await asyncio.gather(backend.ec2.images(), backend.ec2.snapshots())
    by_id = {s.id: s for s in snaps}
    out = []
    for img in images:
        size = _image_size(img, by_id)
        out.append(
            {
                "name": img.name,
                "id": img.id,
                "state": img.state,
                "architecture": img.architecture,
                "created": img.created.isoformat() if img.created else None,
                "size_gb": size,
                "root_device": img.root_device,
                "root_size_gb": img.root_size_gb,
                "monthly_cost": round(snapshot_monthly(size, backend.target.region), 2),
                "snapshots": list(img.snapshot_ids),
                "source": img.tags.get(TAG_SOURCE_NAME) or img.tags.get(TAG_SOURCE, ""),
            }
        )
    return out


@dataclass(frozen=True)
class ImageDeletion:
    image: Image
    snapshots: tuple[Snapshot, ...]
    users: tuple[Instance, ...]  # live boxes launched from it
    region: str

    @property
    def freed_monthly(self) -> float:
        return snapshot_monthly(sum(s.size_gb for s in self.snapshots), self.region)

    def describe(self) -> str:
        snaps = ", ".join(s.id for s in self.snapshots) or "no snapshots"
        text = f"image {self.image.name or self.image.id} ({self.image.id}) and its snapshots ({snaps})"
        if self.users:
            names = ", ".join(i.label for i in self.users)
            one = len(self.users) == 1
            text += f"; {names} {'was' if one else 'were'} launched from it and {'keeps its own disk' if one else 'keep their own disks'}"
        return text


async def plan_image_delete(backend: Backend, name_or_id: str) -> ImageDeletion:
    img = await find_image(backend, name_or_id)
    snaps, insts = await asyncio.gather(backend.ec2.snapshots(), backend.ec2.list_instances())
    by_id = {s.id: s for s in snaps}
    mine = tuple(by_id[s] for s in img.snapshot_ids if s in by_id)
    users = tuple(i for i in insts if i.image_id == img.id and i.is_live)
    return ImageDeletion(img, mine, users, backend.target.region)


async def delete_image(backend: Backend, plan: ImageDeletion, *, progress: Progress = quiet) -> None:
    # EC2 refuses to delete a snapshot while a registered image uses it: image first.
    progress(f"deregistering {plan.image.id}")
    await backend.ec2.deregister_image(plan.image.id)
    for snap in plan.snapshots:
        progress(f"deleting snapshot {snap.id}")
        await backend.ec2.delete_snapshot(snap.id)
