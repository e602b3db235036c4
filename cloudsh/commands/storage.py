"""Images, volumes and snapshots: freeze, images, image delete, volumes, volume …, snapshot(s)."""

from __future__ import annotations

import argparse
from typing import Any

from cloudsh.commands.registry import Context, arg, command, gigabytes
from cloudsh.commands.views import age, money, table
from cloudsh.models import ebs_prices


def _when(iso: str | None) -> str:
    from datetime import datetime

    return age(datetime.fromisoformat(iso)) if iso else "-"


def _unlisted_prices(ctx: Context) -> None:
    """Say so when the region's storage is costed at another region's list prices."""
    prices = ebs_prices(ctx.backend.target.region)
    if not prices.listed:
        ctx.out.info(prices.source)


def _monthly(value: float) -> str:
    return money(value, "/mo")


# -- images ---------------------------------------------------------------------------------


@command(
    "freeze",
    "Save an instance's disk as an image (AMI); `launch --image NAME` brings it back.\n"
    "Reboots the box first for a consistent disk unless --no-reboot.",
    arg("name", kind="instance"),
    arg("image_name", nargs="?", metavar="IMAGE_NAME", help="name of the image (default: NAME-date-time)"),
    arg("--no-reboot", flag=True, help="do not reboot first (files being written may be saved half-written)"),
    destructive=True,
)
async def freeze(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.commands.instances import find_all
    from cloudsh.ops import images as ops

    [inst] = await find_all(ctx, [a.name], "freeze", destructive=not a.no_reboot)
    plan = await ops.plan_freeze(ctx.backend, inst, a.image_name, no_reboot=a.no_reboot, by_id=[a.name])
    if plan.reboots:
        await ctx.confirmed(
            f"{plan.describe()[0].upper()}{plan.describe()[1:]}. Reboot it now?", yes=a.yes,
            what=f"reboot {inst.label} for the freeze (--no-reboot freezes it as it runs)",
        )
    img = await ops.freeze(ctx.backend, plan, progress=ctx.out.info)
    ctx.out.print(f"{img.name} {img.id} {img.state}")
    ctx.out.info(f"launch a copy with `cloudsh launch NEW_NAME --image {img.name}`")
    return 0


@command(
    "images",
    "List your images (AMIs) with their size and monthly storage cost.",
    arg("--json", flag=True, help="print one JSON document"),
)
async def images(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import images as ops

    records = await ops.image_records(ctx.backend)
    if a.json:
        ctx.out.json(records)
        return 0
    if not records:
        ctx.out.info("no images; make one with `cloudsh freeze NAME`")
        return 0
    rows = [
        {**r, "size": f"{r['size_gb']} GB", "cost": _monthly(r["monthly_cost"]), "age": _when(r["created"]), "source": r["source"] or "-"}
        for r in records
    ]
    cols = (("name", "NAME"), ("id", "ID"), ("state", "STATE"), ("architecture", "ARCH"), ("size", "SIZE"),
            ("cost", "STORAGE"), ("age", "CREATED"), ("source", "FROM"))
    ctx.out.print(table(rows, cols))
    ctx.out.info(f"{len(records)} images, {_monthly(sum(r['monthly_cost'] for r in records))} of snapshot storage")
    _unlisted_prices(ctx)
    return 0


@command(
    "image delete",
    "Delete one of your images and its snapshots (asks first, showing the storage freed).",
    arg("image", kind="image", metavar="IMAGE", help="image name or id"),
    destructive=True,
)
async def image_delete(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import images as ops

    plan = await ops.plan_image_delete(ctx.backend, a.image)
    freed = _monthly(plan.freed_monthly)
    await ctx.confirmed(
        f"Delete {plan.describe()}?\nThis frees {freed} of storage and cannot be undone. Delete?",
        yes=a.yes,
        what=f"delete image {plan.image.name or plan.image.id}",
    )
    if plan.users:
        one = len(plan.users) == 1
        ctx.out.info(
            f"note: {', '.join(i.label for i in plan.users)} {'was' if one else 'were'} launched from this image; "
            f"{'it keeps running from its own disk' if one else 'they keep running from their own disks'}"
        )
    await ops.delete_image(ctx.backend, plan, progress=ctx.out.info)
    ctx.out.print(f"{plan.image.name or plan.image.id} deleted ({len(plan.snapshots)} snapshots, {freed} freed)")
    return 0


# -- volumes --------------------------------------------------------------------------------


VOLUME_COLUMNS = (("name", "NAME"), ("id", "ID"), ("size", "SIZE"), ("type", "TYPE"), ("state", "STATE"),
                  ("attached", "ATTACHED TO"), ("az", "AZ"), ("cost", "$/MONTH"))


def volume_row(r: dict[str, Any]) -> dict[str, str]:
    return {
        "name": r["name"] or "-",
        "id": r["id"],
        "size": f"{r['size_gb']} GB",
        "type": r["type"],
        "state": r["state"],
        "attached": f"{r['attached_to']} ({r['device']})" if r["attached_to"] else "-",
        "az": r["az"],
        "cost": _monthly(r["monthly_cost"]),
    }


@command("volumes", "List EBS volumes: size, state, which box they are attached to, cost.",
         arg("--json", flag=True, help="print one JSON document"))
async def volumes(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    records = await ops.volume_records(ctx.backend)
    if a.json:
        ctx.out.json(records)
        return 0
    if not records:
        ctx.out.info("no volumes; make one with `cloudsh volume create NAME GB --for BOX`")
        return 0
    ctx.out.print(table([volume_row(r) for r in records], VOLUME_COLUMNS))
    _unlisted_prices(ctx)
    return 0


@command(
    "volume create",
    "Create an EBS volume in the AZ of the box it is for (or --az), blank or from a snapshot.",
    arg("name", help="Name tag of the new volume"),
    arg("size", type=gigabytes, metavar="GB", help="size in GB"),
    arg("--for", kind="instance", metavar="BOX", help="create it in this box's availability zone"),
    arg("--az", metavar="AZ", help="availability zone"),
    arg("--snapshot", kind="snapshot", metavar="SNAP", help="start from this snapshot (name or id)"),
    arg("--type", default="gp3", metavar="TYPE", help="volume type (default gp3)"),
)
async def volume_create(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    plan = await ops.plan_volume_create(
        ctx.backend, a.name, a.size, for_box=getattr(a, "for"), az=a.az, snapshot=a.snapshot, volume_type=a.type
    )
    vol = await ops.create_volume(ctx.backend, plan, progress=ctx.out.info)
    ctx.out.print(f"{vol.name} {vol.id} {vol.size_gb} GB {vol.az} {vol.state}")
    return 0


@command(
    "volume attach",
    "Attach a volume to a running box; --format makes a filesystem on a blank one,\n"
    "--mount DIR mounts it by UUID (with nofail in /etc/fstab, so a missing volume never blocks boot).",
    arg("volume", kind="volume", metavar="VOL"),
    arg("name", kind="instance", metavar="NAME"),
    arg("--mount", kind="path", metavar="DIR", help="mount point on the box (default with --format: /mnt/VOL)"),
    arg("--format", flag=True, help="make an ext4 filesystem; refused if the volume already has one"),
)
async def volume_attach(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.commands.instances import find_all
    from cloudsh.ops import volumes as ops

    vol = await ops.find_volume(ctx.backend, a.volume)
    [inst] = await find_all(ctx, [a.name])
    done = await ops.attach(ctx.backend, vol, inst, mount=a.mount, fmt=a.format, progress=ctx.out.info)
    where = f" mounted on {done.mount} ({done.device}, UUID={done.uuid})" if done.mount else f" as {done.volume.device}"
    ctx.out.print(f"{vol.name or vol.id} attached to {inst.label}{where}")
    return 0


@command(
    "volume detach",
    "Unmount (refused while programs use it) and detach a volume.",
    arg("volume", kind="volume", metavar="VOL"),
)
async def volume_detach(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    vol = await ops.find_volume(ctx.backend, a.volume)
    vol = await ops.detach(ctx.backend, vol, progress=ctx.out.info)
    ctx.out.print(f"{vol.name or vol.id} {vol.state}")
    return 0


@command(
    "volume delete",
    "Delete a detached volume and everything on it (asks first).",
    arg("volume", kind="volume", metavar="VOL"),
    destructive=True,
)
async def volume_delete(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    vol = await ops.find_volume(ctx.backend, a.volume)
    if vol.attached_to:
        await ops.delete_volume(ctx.backend, vol)  # refuses with the fix
    await ctx.confirmed(
        f"Delete volume {vol.name or vol.id} ({vol.id}, {vol.size_gb} GB) and everything on it? This cannot be undone.",
        yes=a.yes,
        what=f"delete volume {vol.name or vol.id}",
    )
    await ops.delete_volume(ctx.backend, vol, progress=ctx.out.info)
    ctx.out.print(f"{vol.name or vol.id} deleted")
    return 0


# -- snapshots ------------------------------------------------------------------------------


@command(
    "snapshot",
    "Snapshot a volume (waits until it is complete).",
    arg("volume", kind="volume", metavar="VOL"),
    arg("snap_name", nargs="?", metavar="SNAP_NAME", help="name of the snapshot (default: VOL-date-time)"),
)
async def snapshot(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    vol = await ops.find_volume(ctx.backend, a.volume)
    snap = await ops.snapshot(ctx.backend, vol, a.snap_name, progress=ctx.out.info)
    ctx.out.print(f"{snap.name} {snap.id} {snap.size_gb} GB {snap.state}")
    return 0


@command("snapshots", "List EBS snapshots with their monthly storage cost.",
         arg("--json", flag=True, help="print one JSON document"))
async def snapshots(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    records = await ops.snapshot_records(ctx.backend)
    if a.json:
        ctx.out.json(records)
        return 0
    if not records:
        ctx.out.info("no snapshots; make one with `cloudsh snapshot VOL`")
        return 0
    rows = [
        {**r, "name": r["name"] or "-", "size": f"{r['size_gb']} GB", "age": _when(r["started"]),
         "cost": _monthly(r["monthly_cost"]), "image": r["image"] or "-"}
        for r in records
    ]
    cols = (("name", "NAME"), ("id", "ID"), ("volume", "VOLUME"), ("size", "SIZE"), ("state", "STATE"),
            ("age", "CREATED"), ("image", "IMAGE"), ("cost", "$/MONTH"))
    ctx.out.print(table(rows, cols))
    _unlisted_prices(ctx)
    return 0


@command(
    "snapshot delete",
    "Delete a snapshot (asks first); an image's snapshots go with `image delete`.",
    arg("snapshot", kind="snapshot", metavar="SNAP"),
    destructive=True,
)
async def snapshot_delete(ctx: Context, a: argparse.Namespace) -> int:
    from cloudsh.ops import volumes as ops

    snap = await ops.plan_snapshot_delete(ctx.backend, a.snapshot)
    await ctx.confirmed(
        f"Delete snapshot {snap.name or snap.id} ({snap.id}, {snap.size_gb} GB)? This cannot be undone.",
        yes=a.yes,
        what=f"delete snapshot {snap.name or snap.id}",
    )
    await ops.delete_snapshot(ctx.backend, snap, progress=ctx.out.info)
    ctx.out.print(f"{snap.name or snap.id} deleted")
    return 0
