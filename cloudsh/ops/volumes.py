"""EBS volumes and snapshots: the workflows behind the `volume` and `snapshot` commands.

Every `plan_*` does all the checks that can fail before anything changes; the matching
action then changes the cloud, reporting progress through a callback. Volumes are found
on the box by volume id (the NVMe serial on Nitro types), formatted only when blank, and
mounted by filesystem UUID with `nofail`, so a missing volume never blocks a boot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudsh.errors import AWSError, CloudshError, InvalidState, NotFound, UsageError
from cloudsh.models import (
    TAG_MANAGED,
    VOLUME_TYPES,
    HostInfo,
    Instance,
    Snapshot,
    Volume,
    ebs_prices,
    snapshot_monthly,
    volume_monthly,
)
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.images import TAG_IMAGE, TAG_SOURCE
from cloudsh.ops.poll import wait_for_state
from cloudsh.ops.reach import host_for, ssh_host
from cloudsh.services.backend import Backend
from cloudsh.services.ec2 import closest

#: Where cloudsh last mounted a volume (`attach`), so a box that takes it over mounts it there too.
TAG_MOUNT = "cloudsh:mount"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name) or name.startswith(("vol-", "snap-", "ami-", "i-")):
        raise UsageError(
            f"{name!r} is not a usable {kind} name",
            "use letters, digits, '.', '_' or '-', up to 63 characters (not an AWS id)",
        )


# -- volumes --------------------------------------------------------------------------------


def _volume_label(v: Volume) -> str:
    return v.name or v.id


async def find_volume(backend: Backend, name_or_id: str) -> Volume:
    vols = await backend.ec2.volumes()
    by_id = [v for v in vols if v.id == name_or_id]
    if by_id:
        return by_id[0]
    named = [v for v in vols if v.name == name_or_id]
    if len(named) == 1:
        return named[0]
    if named:
        raise UsageError(
            f"{len(named)} volumes are named {name_or_id!r}: {', '.join(v.id for v in named)}", "use the volume id"
        )
    guess = closest(name_or_id, [v.name for v in vols if v.name])
    raise NotFound(f"no volume {name_or_id!r}", f"did you mean {guess}?" if guess else "list them with `cloudsh volumes`")


def volume_record(v: Volume, insts: dict[str, Instance], region: str) -> dict[str, Any]:
    """`volumes --json`: name, id, size_gb, state, attached_to (the box's name), and more;
    `monthly_cost` at the list price of `region`, where the volume is."""
    box = insts.get(v.attached_to or "")
    return {
        "name": v.name,
        "id": v.id,
        "size_gb": v.size_gb,
        "state": v.state,
        "attached_to": (box.label if box else v.attached_to) or None,
        "attached_to_id": v.attached_to,
        "device": v.device,
        "az": v.az,
        "type": v.volume_type,
        "delete_on_termination": v.delete_on_termination,
        "snapshot_id": v.snapshot_id,
        "monthly_cost": round(volume_monthly(v, region), 2),
    }


async def volume_records(backend: Backend) -> list[dict[str, Any]]:
    vols, insts = await asyncio.gather(backend.ec2.volumes(), backend.ec2.list_instances(include_terminated=True))
    by_id = {i.id: i for i in insts}
    return [volume_record(v, by_id, backend.target.region) for v in vols]


@dataclass(frozen=True)
class VolumeCreatePlan:
    name: str
    size_gb: int
    az: str
    volume_type: str
    snapshot: Snapshot | None
    region: str

    def describe(self) -> str:
        src = f" from snapshot {self.snapshot.name or self.snapshot.id}" if self.snapshot else ""
        cost = self.size_gb * ebs_prices(self.region).volume_gb_month(self.volume_type)
        return f"volume {self.name}: {self.size_gb} GB {self.volume_type} in {self.az}{src} (${cost:,.2f}/month)"


async def plan_volume_create(
    backend: Backend,
    name: str,
    size_gb: int,
    *,
    for_box: str | None = None,
    az: str | None = None,
    snapshot: str | None = None,
    volume_type: str = "gp3",
) -> VolumeCreatePlan:
    _check_name("volume", name)
    if volume_type not in VOLUME_TYPES:
        raise UsageError(f"unknown volume type {volume_type!r}", f"one of: {', '.join(VOLUME_TYPES)}")
    if not 1 <= size_gb <= 16384:
        raise UsageError(f"{size_gb} GB is out of range", "use 1 to 16384 GB")
    if for_box and az:
        raise UsageError("give --for BOX or --az AZ, not both", "--for puts the volume in that box's AZ")
    ec2 = backend.ec2
    vols, zones, insts = await asyncio.gather(ec2.volumes(), ec2.availability_zones(), ec2.list_instances())
    clash = [v for v in vols if v.name == name]
    if clash:
        raise UsageError(f"a volume named {name!r} already exists ({clash[0].id})", "pick another name")
    if for_box:
        from cloudsh.services.ec2 import resolve_name

        az = resolve_name(for_box, insts).az
    elif az is None:
        live = [i for i in insts if i.is_live]
        if len(live) != 1:
            raise UsageError(
                "which availability zone?", "add --for BOX (the box it is meant for) or --az AZ; a volume attaches only in its own AZ"
            )
        az = live[0].az
    if az not in zones:
        raise UsageError(f"no availability zone {az!r} in {ec2.region}", f"one of: {', '.join(zones)}")
    snap = None
    if snapshot:
        snap = await find_snapshot(backend, snapshot)
        if snap.state != "completed":
            raise InvalidState(f"snapshot {snap.id} is {snap.state}", "wait until it is completed")
        if size_gb < snap.size_gb:
            raise UsageError(f"snapshot {snap.id} holds {snap.size_gb} GB", f"make the volume at least {snap.size_gb} GB")
    return VolumeCreatePlan(name, size_gb, az, volume_type, snap, backend.target.region)


async def create_volume(backend: Backend, plan: VolumeCreatePlan, *, progress: Progress = quiet) -> Volume:
    progress("creating " + plan.describe())
    vol = await backend.ec2.create_volume(
        az=plan.az,
        size_gb=plan.size_gb,
        volume_type=plan.volume_type,
        snapshot_id=plan.snapshot.id if plan.snapshot else None,
        tags={"Name": plan.name, TAG_MANAGED: "1"},
    )

    async def state() -> str:
        return (await backend.ec2.get_volume(vol.id)).state

    await wait_for_state(f"volume {vol.id}", state, {"available"}, timeout=600, progress=progress)
    return await backend.ec2.get_volume(vol.id)


async def _attach_at_a_free_name(backend: Backend, vol: Volume, inst: Instance, say: Progress) -> None:
    """AttachVolume at the first device name free on the box. Another attach to the same
    box at the same moment can take that name first; EC2 then refuses this one
    (`InvalidParameterValue`, "Attachment point ... is already in use") and the next
    free name is tried."""
    taken: list[str] = []
    for attempt in range(3):
        taken += [v.device for v in await backend.ec2.volumes() if v.attached_to == inst.id and v.device]
        device = _device_name(taken)
        say(f"attaching {_volume_label(vol)} to {inst.label} as {device}")
        try:
            await backend.ec2.attach_volume(vol.id, inst.id, device)
            return
        except AWSError as exc:
            if exc.code != "InvalidParameterValue" or "already in use" not in str(exc) or attempt == 2:
                raise
            taken.append(device)


def _device_name(taken: Sequence[str]) -> str:
    for letter in "fghijklmnop":
        if f"/dev/sd{letter}" not in taken and f"/dev/xvd{letter}" not in taken:
            return f"/dev/sd{letter}"
    raise UsageError("this box has no free device name left (sdf-sdp)", "detach a volume first")


async def _check_attach(backend: Backend, vol: Volume, inst: Instance) -> None:
    if vol.attached_to:
        where = "it" if vol.attached_to == inst.id else vol.attached_to
        raise InvalidState(f"{_volume_label(vol)} is already attached to {where}", f"detach it first: `cloudsh volume detach {_volume_label(vol)}`")
    if vol.state != "available":
        raise InvalidState(f"{_volume_label(vol)} is {vol.state}", "wait until it is available")
    if inst.state in ("terminated", "shutting-down"):
        raise InvalidState(f"{inst.label} is {inst.state}", "attach the volume to a live box")
    if inst.state != "running":
        raise InvalidState(
            f"{inst.label} is {inst.state}; cloudsh attaches volumes to running boxes, to find and mount them",
            f"start it first: `cloudsh start {inst.label}`",
        )
    if vol.az != inst.az:
        raise UsageError(
            f"{_volume_label(vol)} is in {vol.az} but {inst.label} is in {inst.az}; EBS volumes attach only within their AZ",
            f"copy it over: `cloudsh snapshot {_volume_label(vol)}` then "
            f"`cloudsh volume create NEW_NAME {vol.size_gb} --for {inst.label} --snapshot SNAPSHOT`",
        )


@dataclass(frozen=True)
class Attached:
    volume: Volume
    device: str  # on the box, e.g. /dev/nvme1n1
    mount: str | None
    formatted: bool
    uuid: str | None


async def _sh(backend: Backend, host: HostInfo, command: str) -> tuple[int, str, str]:
    result = await backend.ssh.run(host, command, timeout=120)
    return result.exit_status, result.stdout, result.stderr


async def block_devices(backend: Backend, host: HostInfo) -> list[dict[str, Any]]:
    """The box's disks as `lsblk -J` lists them (name, serial, fstype, uuid, mountpoint)."""
    status, out, err = await _sh(backend, host, "lsblk -J -d -o NAME,SERIAL,FSTYPE,UUID,MOUNTPOINT")
    if status != 0:
        raise CloudshError(f"cannot list block devices on the box: {err.strip() or out.strip()}", "check that `lsblk` works there")
    try:
        return list(json.loads(out).get("blockdevices", []))
    except (ValueError, AttributeError):
        return []


def is_device_of(dev: dict[str, Any], vol: Volume) -> bool:
    """Whether a disk `lsblk` lists is `vol`: its NVMe serial is the volume id without '-'
    on Nitro types; on Xen types its name follows the attach device (/dev/sdf -> xvdf)."""
    xen = "xvd" + (vol.device or "")[-1:] if vol.device else ""
    return (dev.get("serial") or "").replace("-", "") == vol.id.replace("-", "") or bool(xen and dev.get("name") == xen)


async def _find_device(backend: Backend, host: HostInfo, vol: Volume, *, timeout: float = 60) -> dict[str, Any]:
    """The block device of `vol` on the box (`is_device_of`), once it shows up. Its
    "others" entry lists the box's other devices."""
    deadline = time.monotonic() + timeout
    while True:
        devices = await block_devices(backend, host)
        for dev in devices:
            if is_device_of(dev, vol):
                return {**dev, "others": [d for d in devices if d is not dev]}
        if time.monotonic() > deadline:
            raise CloudshError(f"{vol.id} is attached but no device with its id shows up on the box", "try `lsblk` on the box")
        await asyncio.sleep(1.0)


def _fstab_add(uuid: str, mount: str) -> str:
    line = f"UUID={uuid} {mount} ext4 defaults,nofail 0 2"
    return (
        f"sudo cat /etc/fstab | grep -q {shlex.quote('UUID=' + uuid)} || "
        f"echo {shlex.quote(line)} | sudo tee -a /etc/fstab >/dev/null"
    )


def _fstab_remove(uuid: str) -> str:
    return (
        f"t=$(mktemp) && sudo cat /etc/fstab | grep -v {shlex.quote('UUID=' + uuid)} > \"$t\"; "
        "sudo tee /etc/fstab < \"$t\" >/dev/null; rm -f \"$t\""
    )


async def attach(
    backend: Backend,
    vol: Volume,
    inst: Instance,
    *,
    mount: str | None = None,
    fmt: bool = False,
    progress: Progress = quiet,
) -> Attached:
    """Attach; with `fmt`, make an ext4 filesystem on a blank volume (never on one that has
    one); with `mount` (or `fmt`), mount it by UUID and add a `nofail` line to fstab.
    A refusal after the attach detaches again, so nothing is left changed."""
    await _check_attach(backend, vol, inst)
    if mount is not None and not mount.startswith("/"):
        raise UsageError(f"--mount {mount}: give an absolute path", "for example --mount /mnt/data")
    if fmt and mount is None:
        mount = f"/mnt/{vol.name or vol.id}"
    host = await host_for(backend, inst) if mount else None
    ec2 = backend.ec2
    # Until the device checks pass, progress is held back: a refusal undoes the attach
    # and then only the refusal is worth reading.
    held: list[str] = []
    say: Progress = held.append if mount else progress
    await _attach_at_a_free_name(backend, vol, inst, say)

    async def state() -> str:
        return (await ec2.get_volume(vol.id)).state

    await wait_for_state(f"volume {vol.id}", state, {"in-use"}, timeout=300, progress=say)
    vol = await ec2.get_volume(vol.id)
    if host is None or mount is None:
        return Attached(vol, "", None, False, None)
    try:
        dev = await _find_device(backend, host, vol)
        path = "/dev/" + str(dev["name"])
        if fmt and dev.get("fstype"):
            raise UsageError(
                f"{_volume_label(vol)} already holds a filesystem ({dev['fstype']}); refusing to format it",
                "nothing was changed; attach it without --format to mount what is on it",
            )
        if not fmt and not dev.get("fstype"):
            raise UsageError(f"{_volume_label(vol)} is blank (no filesystem)", "add --format to make one")
        if dev.get("mountpoint"):
            raise InvalidState(f"{path} is already mounted on {dev['mountpoint']}", "")
        twin = next((d for d in dev["others"] if dev.get("uuid") and d.get("uuid") == dev.get("uuid")), None)
        if twin is not None:
            # A volume restored from a snapshot of one already on this box: same UUID,
            # so mounting by UUID (and fstab at boot) could pick either.
            raise UsageError(
                f"{_volume_label(vol)} has the same filesystem UUID as /dev/{twin['name']} on {inst.label} (a copy of it)",
                "nothing was changed; attach it to another box, or detach the other volume first",
            )
        for line in held:
            progress(line)
        if fmt:
            progress(f"formatting {path} (ext4)")
            label = re.sub(r"[^A-Za-z0-9_-]", "", vol.name or "")[:16]
            status, _, err = await _sh(
                backend, host, f"sudo mkfs.ext4 -q {'-L ' + shlex.quote(label) + ' ' if label else ''}{shlex.quote(path)}"
            )
            if status != 0:
                raise CloudshError(f"mkfs.ext4 {path} failed: {err.strip()}", "")
        status, out, err = await _sh(backend, host, f"sudo blkid -o value -s UUID {shlex.quote(path)}")
        uuid = out.strip().splitlines()[0] if status == 0 and out.strip() else ""
        if not uuid:
            raise CloudshError(f"cannot read the filesystem UUID of {path}: {err.strip()}", "")
    except CloudshError:
        await ec2.detach_volume(vol.id, inst.id)
        await wait_for_state(f"volume {vol.id}", state, {"available"}, timeout=300, progress=quiet)
        raise
    progress(f"mounting UUID={uuid} on {mount}")
    q = shlex.quote(mount)
    status, _, err = await _sh(
        backend,
        host,
        f"sudo mkdir -p {q} && sudo mount -o defaults,nofail UUID={uuid} {q} && "
        f"sudo chown \"$(id -u):$(id -g)\" {q} && {_fstab_add(uuid, mount)}",
    )
    if status != 0:
        raise CloudshError(
            f"{_volume_label(vol)} is attached as {path} but mounting it on {mount} failed: {err.strip()}",
            f"fix it on the box, or `cloudsh volume detach {_volume_label(vol)}`",
        )
    with contextlib.suppress(CloudshError):  # a box that takes the volume over mounts it there too
        await ec2.set_tags([vol.id], {TAG_MOUNT: mount})
    return Attached(vol, path, mount, fmt, uuid)


async def mount_point(backend: Backend, vol: Volume) -> str | None:
    """Where the volume is mounted on its running box, else where cloudsh last mounted it."""
    if vol.attached_to:
        inst = await backend.ec2.get_instance(vol.attached_to)
        if inst.state == "running":
            dev = await _find_device(backend, await host_for(backend, inst), vol, timeout=5)
            return str(dev["mountpoint"]) if dev.get("mountpoint") else None
    return vol.tags.get(TAG_MOUNT) or None


_BUSY = (
    'd={d}; r=$(readlink -f "$d"); for p in /proc/[0-9]*; do for l in "$p"/cwd "$p"/fd/*; do '
    't=$(readlink "$l" 2>/dev/null) || continue; case "$t" in "$d"|"$d"/*|"$r"|"$r"/*) '
    'echo "${{p#/proc/}} $(cat "$p"/comm 2>/dev/null)"; break;; esac; done; done | sort -un'
)


async def detach(backend: Backend, vol: Volume, *, progress: Progress = quiet) -> Volume:
    """Unmount (refusing if busy, naming the processes), drop the fstab line, detach."""
    if not vol.attached_to:
        raise InvalidState(f"{_volume_label(vol)} is not attached", "nothing to detach")
    await _refuse_root_disk(backend, vol, "be detached")
    ec2 = backend.ec2
    inst = await ec2.get_instance(vol.attached_to)
    if inst.state == "running":
        host = await host_for(backend, inst)
        dev = await _find_device(backend, host, vol, timeout=5)
        mp = dev.get("mountpoint")
        if mp:
            q = shlex.quote(str(mp))
            progress(f"unmounting {mp} on {inst.label}")
            status, out, err = await _sh(backend, host, f"sudo umount {q}")
            if status != 0:
                _, procs, _ = await _sh(backend, host, f"sudo sh -c {shlex.quote(_BUSY.format(d=q))}")
                users = ", ".join(
                    f"{line.split(' ', 1)[1] if ' ' in line else '?'} (pid {line.split(' ', 1)[0]})"
                    for line in procs.strip().splitlines()
                )
                if "busy" in err or users:
                    raise InvalidState(
                        f"{mp} on {inst.label} is busy" + (f": used by {users}" if users else ""),
                        "stop those programs (or leave that directory) and try again",
                    )
                raise CloudshError(f"umount {mp} failed: {err.strip()}", "")
            if dev.get("uuid"):
                await _sh(backend, host, _fstab_remove(str(dev["uuid"])))
    progress(f"detaching {_volume_label(vol)} from {inst.label}")
    await ec2.detach_volume(vol.id, inst.id)

    async def state() -> str:
        return (await ec2.get_volume(vol.id)).state

    await wait_for_state(f"volume {vol.id}", state, {"available"}, timeout=300, progress=progress)
    return await ec2.get_volume(vol.id)


async def _refuse_root_disk(backend: Backend, vol: Volume, verb: str) -> None:
    """A box's root disk is not a data volume: detaching it (which would mean `umount /`)
    or deleting it is refused, with what to do instead."""
    if not vol.attached_to:
        return
    inst = await backend.ec2.get_instance(vol.attached_to)
    if inst.root_volume == vol.id:
        raise InvalidState(
            f"{_volume_label(vol)} is the root disk of {inst.label}: it cannot {verb} while the box has it",
            f"keep its files with `cloudsh freeze {inst.label}` (an image); it goes with the box on `cloudsh terminate`",
        )


async def delete_volume(backend: Backend, vol: Volume, *, progress: Progress = quiet) -> None:
    await _refuse_root_disk(backend, vol, "be deleted")
    if vol.attached_to:
        raise InvalidState(
            f"{_volume_label(vol)} is attached to {vol.attached_to}",
            f"detach it first: `cloudsh volume detach {_volume_label(vol)}`",
        )
    progress(f"deleting {_volume_label(vol)} ({vol.id})")
    await backend.ec2.delete_volume(vol.id)


# -- snapshots ------------------------------------------------------------------------------


async def find_snapshot(backend: Backend, name_or_id: str) -> Snapshot:
    snaps = await backend.ec2.snapshots()
    for s in snaps:
        if s.id == name_or_id:
            return s
    named = [s for s in snaps if s.name == name_or_id]
    if len(named) == 1:
        return named[0]
    if named:
        newest = max(named, key=lambda s: s.started or datetime.min.replace(tzinfo=UTC))
        return newest
    guess = closest(name_or_id, [s.name for s in snaps if s.name])
    raise NotFound(f"no snapshot {name_or_id!r}", f"did you mean {guess}?" if guess else "list them with `cloudsh snapshots`")


def snapshot_record(s: Snapshot, vols: dict[str, Volume], region: str) -> dict[str, Any]:
    v = vols.get(s.volume_id)
    return {
        "name": s.name,
        "id": s.id,
        "volume_id": s.volume_id,
        "volume": (v.name or v.id) if v else s.volume_id,
        "size_gb": s.size_gb,
        "state": s.state,
        "started": s.started.isoformat() if s.started else None,
        "image": s.tags.get(TAG_IMAGE),
        "monthly_cost": round(snapshot_monthly(s.size_gb, region), 2),
    }


async def snapshot_records(backend: Backend) -> list[dict[str, Any]]:
    snaps, vols = await asyncio.gather(backend.ec2.snapshots(), backend.ec2.volumes())
    by_id = {v.id: v for v in vols}
    return [snapshot_record(s, by_id, backend.target.region) for s in snaps]


async def open_files(backend: Backend, vol: Volume) -> list[str]:
    """Files on the volume that a program on its (running) box holds open for writing: a
    snapshot takes the blocks as they are, so those may be saved half-written. Best effort:
    an unreachable box or an unmounted volume gives none."""
    from cloudsh.ops.jobs.box import call_agent, install_agent

    if not vol.attached_to:
        return []
    try:
        insts = await backend.ec2.list_instances(ids=[vol.attached_to])
        if not insts or insts[0].state != "running":
            return []
        host = await ssh_host(backend, insts[0])
        mount = (await _find_device(backend, host, vol, timeout=0)).get("mountpoint")
        if not mount:
            return []
        await install_agent(backend, host)
        return [str(p) for p in await call_agent(backend, host, f"open {shlex.quote(str(mount))}")]
    except CloudshError:
        return []


async def snapshot(backend: Backend, vol: Volume, name: str | None = None, *, progress: Progress = quiet) -> Snapshot:
    label = name or f"{_volume_label(vol)}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    _check_name("snapshot", label)
    if any(s.name == label for s in await backend.ec2.snapshots()):
        raise UsageError(f"a snapshot named {label!r} already exists", "pick another name")
    busy = await open_files(backend, vol)
    if busy:
        shown = ", ".join(busy[:5]) + (f" and {len(busy) - 5} more" if len(busy) > 5 else "")
        progress(f"warning: files open for writing on {_volume_label(vol)} may be saved half-written: {shown}")
    progress(f"snapshotting {_volume_label(vol)} as {label}")
    tags = {"Name": label, TAG_MANAGED: "1"}
    if vol.attached_to:
        tags[TAG_SOURCE] = vol.attached_to
    snap = await backend.ec2.create_snapshot(vol.id, f"cloudsh snapshot of {_volume_label(vol)}", tags)

    async def state() -> str:
        return (await backend.ec2.get_snapshot(snap.id)).state

    await wait_for_state(f"snapshot {snap.id}", state, {"completed"}, timeout=6 * 3600, progress=progress)
    return await backend.ec2.get_snapshot(snap.id)


async def plan_snapshot_delete(backend: Backend, name_or_id: str) -> Snapshot:
    snap = await find_snapshot(backend, name_or_id)
    users = [i for i in await backend.ec2.images() if snap.id in i.snapshot_ids]
    if users:
        img = users[0]
        raise InvalidState(
            f"snapshot {snap.id} belongs to image {img.name or img.id}",
            f"delete the image (and its snapshots) with `cloudsh image delete {img.name or img.id}`",
        )
    return snap


async def delete_snapshot(backend: Backend, snap: Snapshot, *, progress: Progress = quiet) -> None:
    progress(f"deleting snapshot {snap.name or snap.id} ({snap.id})")
    await backend.ec2.delete_snapshot(snap.id)
