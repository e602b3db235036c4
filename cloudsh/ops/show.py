"""One box in full (`show NAME`, the app's box view): its type and GPUs, state and why,
price and cost so far, image, addresses and how to reach it, volumes with where they are
mounted, the SSH rules of its groups, its tags, jobs and idle stop, as one record.

Every part is asked for at once; a part that cannot be had (a box that does not answer,
a call the account may not make) leaves a note saying why, never the whole view.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cloudsh.errors import CloudshError
from cloudsh.models import (
    INTERRUPTED_HINT,
    SSH_RULE_DESCRIPTION,
    HostInfo,
    Instance,
    Job,
    SshRule,
    Volume,
    image_family,
    ipv4_hourly,
    to_jsonable,
    volume_monthly,
)
from cloudsh.ops.idle import describe, idle_report
from cloudsh.ops.jobs.state import box_jobs
from cloudsh.ops.reach import ssh_host
from cloudsh.ops.records import instance_record
from cloudsh.ops.volumes import TAG_MOUNT, block_devices, is_device_of
from cloudsh.services.openssh import openssh_args

if TYPE_CHECKING:
    # boto3 underneath: for types only, so the app paints before it loads
    from cloudsh.services.backend import Backend

T = TypeVar("T")

#: Seconds the view waits for a running box to say where its volumes are mounted; past
#: that, the mount points cloudsh last set (the volumes' `cloudsh:mount` tag) are shown.
ASK_BOX_S = 10.0

#: What EC2's state reason codes mean to a person ("StateReason", EC2 API reference,
#: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StateReason.html).
REASONS = {
    "Client.UserInitiatedShutdown": "stopped through the EC2 API (`cloudsh stop`, the console, a script)",
    "Client.InstanceInitiatedShutdown": "shut down from inside the box (`sudo shutdown`, an idle stop)",
    "Server.ScheduledStop": "stopped by EC2 for scheduled maintenance",
    "Server.InsufficientInstanceCapacity": "EC2 had no capacity for its type in its AZ",
    "Server.SpotInstanceTermination": "terminated by a spot interruption",
    "Client.VolumeLimitExceeded": "the account's EBS volume limit was reached",
}


async def _part(notes: list[str], what: str, job: Awaitable[T], default: T) -> T:
    """`job`'s answer, or `default` with a note saying why it is missing."""
    try:
        return await job
    except CloudshError as exc:
        notes.append(f"{what}: {exc}")
        return default


def why(inst: Instance, label: str, host: HostInfo | None) -> str:
    """One line on why the box is in its state, and what to do about it."""
    if inst.interrupted:
        return INTERRUPTED_HINT.format(name=label)
    reason = REASONS.get(inst.state_reason, inst.state_reason)
    if inst.state == "stopped":
        return (reason + "; " if reason else "") + f"only its disks bill; `cloudsh start {label}` starts it"
    if inst.state == "running" and host is None and inst.managed:
        return "running, but SSH does not answer from here yet"
    if inst.state in ("pending", "stopping", "shutting-down"):
        return f"{inst.state}: EC2 is changing its state"
    return reason


async def _mounts(backend: Backend, host: HostInfo, vols: Sequence[Volume]) -> dict[str, str]:
    """Where the box says each volume is mounted (one `lsblk` for all)."""
    devices = await asyncio.wait_for(block_devices(backend, host), ASK_BOX_S)
    return {v.id: str(d["mountpoint"]) for v in vols for d in devices if is_device_of(d, v) and d.get("mountpoint")}


def _volume(v: Volume, inst: Instance, mounted: Mapping[str, str] | None, region: str) -> dict[str, Any]:
    root = v.id == inst.root_volume
    if root:
        mount: str | None = "/"
    elif mounted is not None:
        mount = mounted.get(v.id)  # as the box says: None when it is not mounted now
    else:
        mount = v.tags.get(TAG_MOUNT) or None  # where cloudsh last mounted it
    return {
        "id": v.id, "name": v.name, "size_gb": v.size_gb, "type": v.volume_type, "device": v.device, "root": root,
        "mount": mount,
        # True: `mount` is what the box says now; false: where cloudsh last mounted it.
        "mount_reported": mounted is not None or root,
        "delete_on_termination": v.id in inst.deleted_on_termination,
        "per_month": round(volume_monthly(v, region), 4),
    }


def _rule(r: SshRule) -> dict[str, Any]:
    return {"group_id": r.group_id, "cidr": r.cidr, "description": r.description,
            "cloudsh": r.description.startswith(SSH_RULE_DESCRIPTION)}


def _job(j: Job) -> dict[str, Any]:
    keys = ("id", "state", "script", "exit_status", "started", "runtime_s", "remote_dir", "local_dir", "cost")
    return {k: to_jsonable(getattr(j, k)) for k in keys}


async def box_record(
    backend: Backend,
    name: str,
    *,
    tunnels: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything about the box NAME (Name tag or id): the `ls --json` record and more.

    `tunnels` are the forwards this process keeps to it (`local_port`, `remote_port`,
    `url`, `status`), where it knows them; None (JSON null) when it cannot know.

    Raises:
        NotFound: no such box; UsageError: the name is ambiguous.
    """
    inst = await backend.ec2.find(name)
    notes: list[str] = []
    spot = [inst.type] if inst.market == "spot" else []
    # SSH to the box (its key checked and pinned) while EC2 is asked the rest.
    reach = asyncio.ensure_future(_part(notes, "SSH", _reach(backend, inst), None))
    try:
        types, prices, image, all_volumes, rules, jobs = await asyncio.gather(
            backend.ec2.instance_types([inst.type]),
            backend.pricing.prices([inst.type], strict=False, spot_for=spot),
            _part(notes, "image", backend.ec2.get_image(inst.image_id), None) if inst.image_id else asyncio.sleep(0, None),
            _part(notes, "volumes", backend.ec2.volumes(), []),
            _part(notes, "security rules", backend.ec2.ssh_rules(inst.security_groups), [])
            if inst.security_groups else asyncio.sleep(0, []),
            _part(notes, "jobs", box_jobs(backend, inst), []),
        )
        host = await reach
    finally:
        reach.cancel()  # when EC2 failed: the SSH attempt is no longer wanted
    vols = sorted((v for v in all_volumes if v.attached_to == inst.id), key=lambda v: (v.id != inst.root_volume, v.device or ""))

    async def mounts() -> dict[str, str] | None:
        if host is None or not inst.managed or len(vols) < 2:
            return None
        try:
            return await _mounts(backend, host, vols)
        except (CloudshError, TimeoutError) as exc:
            notes.append(f"mount points: the box did not say ({exc or 'no answer'}); cloudsh's last ones shown")
            return None

    # Why it is awake: the agent is asked over the connection just made (none when SSH failed).
    asks_idle = inst.managed and (host is not None or inst.state != "running")
    mounted, idle = await asyncio.gather(
        mounts(),
        _part(notes, "idle status", idle_report(backend, inst, host=host), None) if asks_idle else asyncio.sleep(0, None),
    )
    ports = backend.hosts.ssh_ports([inst]) if inst.state == "running" else {}
    rec = instance_record(inst, types, prices, now, ssh_port=ports.get(inst.id) or (host.port if host else None))
    t = types.get(inst.type)
    region = backend.target.region
    label = inst.label if inst.managed else inst.id
    storage = sum(volume_monthly(v, region) for v in vols)
    rec.update(
        vcpus=t.vcpus if t else None,
        memory_gib=t.memory_gib if t else None,
        state_reason=inst.state_reason,
        why=why(inst, label, host),
        private_ip=inst.private_ip,
        ssh_user=host.user if host else backend.settings.ssh_user,
        connect=f"cloudsh connect {shlex.quote(label)}",
        # Plain OpenSSH, checking the key cloudsh pinned; null until the box answers (and
        # for a box cloudsh did not launch: `connect` lets this machine in first).
        ssh_command=shlex.join(openssh_args(host, backend.settings)) if host else None,
        image={"id": inst.image_id, "name": image.name if image else None,
               "family": inst.image_family or (image_family(image) if image else "")},
        volumes=[_volume(v, inst, mounted, region) for v in vols],
        security_groups=list(inst.security_groups),
        ssh_rules=[_rule(r) for r in rules],
        tags={k: v for k, v in sorted(inst.tags.items())},
        jobs=[_job(j) for j in jobs],
        tunnels=[dict(tun) for tun in tunnels] if tunnels is not None else None,
        # As `idle NAME --json`, with its words (`text`); null for a box cloudsh did not launch.
        idle={**idle, "text": describe(idle)} if idle else None,
        ipv4_per_hour=ipv4_hourly(region) if inst.public_ip else 0.0,
        storage_per_month=round(storage, 4),
        notes=notes,
    )
    return rec


async def _reach(backend: Backend, inst: Instance) -> HostInfo | None:
    """How to reach the box over SSH, if it runs. Reaching a box pins its key and lets this
    machine in, as `connect` does: only on boxes cloudsh launched (`ops.owners`); for
    another's, `cloudsh connect ID` does that when asked."""
    if inst.state != "running" or not inst.managed:
        return None
    return await ssh_host(backend, inst)

