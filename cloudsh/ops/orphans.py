"""Orphans: what bills or lingers with nothing using it, and sweeping it away.

An orphan is an unattached volume, a snapshot whose volume is gone and that no image
uses, an image nobody launched from in 90 days, an Elastic IP attached to nothing, or a
key pair or security group that cloudsh made (tagged `cloudsh:managed`) and no box uses.
Nothing a box that exists (running or stopped) uses is ever one. `--all-regions` asks
every region at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cloudsh.errors import CloudshError
from cloudsh.models import HOURS_PER_MONTH, ipv4_hourly, snapshot_monthly, volume_monthly

if TYPE_CHECKING:
    from cloudsh.config import Settings
    from cloudsh.services.backend import Backend
    from cloudsh.services.ec2 import EC2Service

#: Worker threads per region in a sweep of every region: about half of a region's listings
#: at once. On EC2 each thread opens its own TLS connection to the region (a handshake's
#: CPU each: near a hundred with one thread per listing) while each listing waits one
#: round trip; three keeps the sweep to two round trips a region for half the handshakes.
THREADS_PER_REGION = 3
KINDS = ("volume", "snapshot", "image", "elastic-ip", "key-pair", "security-group")


@dataclass(frozen=True)
class Orphan:
    kind: str
    id: str
    name: str
    region: str
    per_month: float
    created: datetime | None
    why: str
    #: An image's snapshots, deleted with it.
    snapshots: tuple[str, ...] = ()

    def record(self, now: datetime | None = None) -> dict[str, Any]:
        age = ((now or datetime.now(UTC)) - self.created).total_seconds() / 86400 if self.created else None
        return {
            "kind": self.kind, "id": self.id, "name": self.name, "region": self.region,
            "per_month": round(self.per_month, 2), "age_days": None if age is None else round(age, 1),
            "created": self.created.isoformat() if self.created else None, "why": self.why,
        }


async def _none() -> list[Any]:
    return []


async def find(ec2: EC2Service, settings: Settings, *, now: datetime | None = None) -> list[Orphan]:
    """The orphans of one region: five listings at once (cloudsh's key pairs and groups
    found by their tag, both in one), then, only where there is something a box could be
    using (an image, a key pair or group cloudsh made), the region's boxes and those key
    pairs and groups. Most regions of a sweep hold none of these: five calls each."""
    now = now or datetime.now(UTC)
    region = ec2.region
    vols, snaps, imgs, addrs, (key_ids, group_ids) = await asyncio.gather(
        ec2.volumes(), ec2.snapshots(), ec2.images(), ec2.addresses(), ec2.managed_keys_and_groups())
    keys, groups, insts = await asyncio.gather(
        ec2.key_pairs(key_ids) if key_ids else _none(),
        ec2.security_groups(group_ids) if group_ids else _none(),
        ec2.list_instances(include_terminated=True) if imgs or key_ids or group_ids else _none(),
    )
    live = [i for i in insts if i.is_live]
    out: list[Orphan] = []
    for v in vols:
        if v.attached_to is None and v.state == "available":
            out.append(Orphan("volume", v.id, v.name, region, volume_monthly(v, region), v.created,
                              f"{v.size_gb} GB {v.volume_type}, attached to nothing"))
    launched: dict[str, datetime] = {}
    for i in insts:  # terminated boxes stay listed for about an hour: a launch signal too
        if i.launch_time and (i.image_id not in launched or i.launch_time > launched[i.image_id]):
            launched[i.image_id] = i.launch_time
    in_use = {i.image_id for i in live}
    sizes = {s.id: s.size_gb for s in snaps}
    for img in imgs:
        last = max((t for t in (img.created, launched.get(img.id)) if t), default=None)
        if last is None or img.id in in_use or img.state != "available":
            continue
        if now - last < timedelta(days=settings.orphan_image_days):
            continue
        size = sum(sizes.get(s, 0) for s in img.snapshot_ids)
        since = "launched" if img.id in launched else "created"
        out.append(Orphan("image", img.id, img.name, region, snapshot_monthly(size, region), img.created,
                          f"nobody launched it for {(now - last).days} days (last {since} then)", img.snapshot_ids))
    image_snaps = {s for img in imgs for s in img.snapshot_ids}
    volume_ids = {v.id for v in vols}
    for s in snaps:
        if s.volume_id not in volume_ids and s.id not in image_snaps and s.state != "pending":
            out.append(Orphan("snapshot", s.id, s.name, region, snapshot_monthly(s.size_gb, region), s.started,
                              f"its volume {s.volume_id or '?'} is gone and no image uses it"))
    for a in addrs:
        if a.association_id is None and a.instance_id is None:
            out.append(Orphan("elastic-ip", a.allocation_id, a.public_ip, region,
                              ipv4_hourly(region) * HOURS_PER_MONTH, None, "attached to nothing"))
    used_keys = {i.key_name for i in live}
    for name, created in keys:
        if name not in used_keys:
            out.append(Orphan("key-pair", name, name, region, 0.0, created, "made by cloudsh; no box uses it"))
    used_groups = {g for i in live for g in i.security_groups}
    for gid, name in groups:
        if gid not in used_groups:
            out.append(Orphan("security-group", gid, name, region, 0.0, None, "made by cloudsh; no box uses it"))
    return sorted(out, key=lambda o: (o.region, KINDS.index(o.kind), -o.per_month, o.id))


async def regions(backend: Backend) -> list[str]:
    """The regions to sweep: the account's enabled ones (on the sandbox: those it serves)."""
    return await backend.ec2.regions()


def region_ec2(backend: Backend, region: str) -> EC2Service:
    """An EC2 service for `region` on the same account (the backend's own for its region)."""
    if region == backend.target.region:
        return backend.ec2
    from cloudsh.services.ec2 import EC2Service

    return EC2Service(backend.clients, region=region)


@dataclass(frozen=True)
class Sweep:
    orphans: list[Orphan]
    #: (region, why) for regions that could not be asked.
    failed: list[tuple[str, str]]

    @property
    def per_month(self) -> float:
        return sum(o.per_month for o in self.orphans)


async def sweep(backend: Backend, *, all_regions: bool = False) -> Sweep:
    """The orphans of this region, or of every region at once. The sweep runs on an event
    loop of its own in a worker thread, with `THREADS_PER_REGION` threads for each region,
    so no region waits for another's answers (the caller's loop, say the app's, has only
    a few threads for its calls)."""
    if not all_regions:
        return Sweep(await find(backend.ec2, backend.settings), [])
    names = await regions(backend)

    async def one(region: str) -> list[Orphan] | str:
        try:
            return await find(region_ec2(backend, region), backend.settings)
        except CloudshError as exc:
            return exc.message

    async def every_region() -> list[list[Orphan] | str]:
        workers = ThreadPoolExecutor(max_workers=max(1, len(names) * THREADS_PER_REGION), thread_name_prefix="sweep")
        asyncio.get_running_loop().set_default_executor(workers)
        return await asyncio.gather(*(one(r) for r in names))

    answers = await asyncio.to_thread(asyncio.run, every_region())
    found = [o for a in answers if isinstance(a, list) for o in a]
    failed = [(r, a) for r, a in zip(names, answers, strict=True) if isinstance(a, str)]
    if failed and len(failed) == len(names):
        raise CloudshError(f"no region could be swept: {failed[0][0]}: {failed[0][1]}", "try without --all-regions")
    return Sweep(found, failed)


async def clean(backend: Backend, orphans: Sequence[Orphan], *, tell: Any = print) -> list[tuple[Orphan, str]]:
    """Delete these orphans; returns (orphan, why) for those that could not be deleted."""
    services: dict[str, EC2Service] = {}
    failed: list[tuple[Orphan, str]] = []
    for o in orphans:
        ec2 = services.setdefault(o.region, region_ec2(backend, o.region))
        try:
            if o.kind == "volume":
                await ec2.delete_volume(o.id)
            elif o.kind == "snapshot":
                await ec2.delete_snapshot(o.id)
            elif o.kind == "image":
                await ec2.deregister_image(o.id)
                for sid in o.snapshots:
                    await ec2.delete_snapshot(sid)
            elif o.kind == "elastic-ip":
                await ec2.release_address(o.id)
            elif o.kind == "key-pair":
                await ec2.delete_key_pair(o.id)
            else:
                await ec2.delete_security_group(o.id)
        except CloudshError as exc:
            failed.append((o, str(exc)))
            continue
        tell(f"deleted {o.kind} {o.id} ({o.region})")
    return failed
