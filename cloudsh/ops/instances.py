"""Multi-step instance workflows: launch, wait until SSH answers, resize, terminate.

UI-agnostic: progress goes to a callback, errors are `CloudshError`s, and each
workflow leaves nothing half-done that it created itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudsh.errors import CapacityError, CloudshError, InvalidState, UsageError
from cloudsh.models import HostInfo, Instance, InstanceType, Price
from cloudsh.services.backend import Backend
from cloudsh.services.ec2 import LaunchSpec
from cloudsh.services.keys import ensure_key, key_pair_name

Progress = Callable[[str], None]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _quiet(_: str) -> None:
    pass


def check_name(name: str) -> None:
    if not _NAME.match(name) or name.startswith("i-"):
        raise UsageError(
            f"{name!r} is not a usable instance name",
            "use letters, digits, '.', '_' or '-' (not starting with 'i-'), up to 63 characters",
        )


async def caller_cidr(backend: Backend) -> str:
    """The address SSH is opened to: this machine's public address (loopback in the sandbox)."""
    if backend.sandbox:
        return "127.0.0.1/32"
    import urllib.request

    def fetch() -> str:
        with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=5) as r:
            return str(r.read().decode().strip())

    try:
        ip = await asyncio.to_thread(fetch)
    except OSError as exc:
        raise CloudshError(
            f"cannot find this machine's public address to open SSH to ({exc})",
            "check your network connection",
        ) from None
    if not re.match(r"^\d{1,3}(\.\d{1,3}){3}$", ip):
        raise CloudshError(f"unexpected public address {ip!r}", "try again")
    return f"{ip}/32"


async def host_for(backend: Backend, inst: Instance) -> HostInfo:
    """How to reach a running instance over SSH, or a clear error saying why not."""
    host = backend.hosts.resolve(inst)
    if host is None:
        raise InvalidState(
            f"{inst.label} is running but does not answer SSH yet",
            "it is probably still booting: wait a moment and try again",
        )
    return host


async def ssh_host(
    backend: Backend,
    inst: Instance,
    *,
    stopped_hint: str | None = None,
    other_hint: str = "check `cloudsh ls --all`",
) -> HostInfo:
    """How to reach a running box over SSH, its host key pinned; else why not, and the fix."""
    if inst.state != "running":
        stopped = inst.state in ("stopped", "stopping")
        hint = (stopped_hint or f"start it with `cloudsh start {inst.label}`") if stopped else other_hint
        raise InvalidState(f"{inst.label} is {inst.state}, not running", hint)
    host = await host_for(backend, inst)
    await backend.ssh.ensure_pinned(host)
    return host


async def wait_ssh(backend: Backend, inst: Instance, *, timeout: float | None = None) -> HostInfo:
    """Wait until the instance's SSH server answers, then pin its host key."""

    async def resolve() -> HostInfo | None:
        current = inst
        if backend.sandbox:
            return backend.hosts.resolve(current)
        if not (current.public_ip or current.private_ip):
            found = await backend.ec2.list_instances(ids=[inst.id])
            current = found[0] if found else inst
        return backend.hosts.resolve(current)

    host = await backend.ssh.wait_ready(resolve, timeout=timeout or backend.settings.wait_timeout_s)
    learn = getattr(backend.hosts, "learn_console_output", None)
    if learn is not None and not host.expected_host_keys and not backend.ssh.known_hosts.keys(host.host_key_alias):
        # First contact on AWS: check the key against what cloud-init printed to the
        # console, when it has printed it (else trust on first use, and pin).
        try:
            keys = learn(inst.id, await backend.ec2.console_output(inst.id))
            if keys:
                host = dataclasses.replace(host, expected_host_keys=tuple(keys))
        except CloudshError:
            pass  # no console access: fall back to trust on first use
    await backend.ssh.ensure_pinned(host)
    return host


@dataclass(frozen=True)
class LaunchPlan:
    name: str
    itype: InstanceType
    image_id: str
    image_name: str
    spot: bool
    disk_gb: int


async def plan_launch(
    backend: Backend,
    name: str,
    *,
    instance_type: str | None = None,
    spot: bool = False,
    disk_gb: int | None = None,
    image: str | None = None,
) -> LaunchPlan:
    """Every check that can fail before anything is created."""
    check_name(name)
    ec2 = backend.ec2
    disk = disk_gb or backend.settings.default_disk_gb
    if not 8 <= disk <= 16384:
        raise UsageError(f"--disk {disk} is out of range", "use 8 to 16384 GB")
    existing, itype = await asyncio.gather(
        ec2.list_instances(), ec2.instance_type(instance_type or backend.settings.default_type)
    )
    clash = [i for i in existing if i.name == name and i.is_live]
    if clash:
        raise UsageError(
            f"an instance named {name!r} already exists ({clash[0].id}, {clash[0].state})",
            "pick another name, or terminate that one first",
        )
    if spot and not itype.spot_supported:
        raise UsageError(f"{itype.name} cannot run as spot", "launch it without --spot")
    if image:
        img = await ec2.find_image(image)
    else:
        arch = "x86_64" if "x86_64" in itype.architectures else (itype.architectures or ("x86_64",))[0]
        img = await ec2.default_image(arch)
    if itype.architectures and img.architecture not in itype.architectures:
        raise UsageError(
            f"{itype.name} runs {'/'.join(itype.architectures)} but image {img.name or img.id} "
            f"is {img.architecture}",
            f"pick an {img.architecture} type or an image built for {itype.architectures[0]}",
        )
    if img.state and img.state != "available":
        raise UsageError(f"image {img.name or img.id} is {img.state}", "wait until it is available")
    return LaunchPlan(name, itype, img.id, img.name, spot, disk)


async def launch(
    backend: Backend,
    plan: LaunchPlan,
    *,
    wait: bool = True,
    progress: Progress = _quiet,
) -> Instance:
    """Create the box; roll back the key pair and security group if this call made them."""
    ec2, settings = backend.ec2, backend.settings
    public_key = ensure_key(settings.key_path)
    key_name = key_pair_name(settings.key_name, public_key)
    created_key = created_group = False
    group_id: str | None = None
    try:
        if not await ec2.key_pair_exists(key_name):
            progress(f"importing key pair {key_name}")
            await ec2.import_key_pair(key_name, public_key)
            created_key = True
        cidr = await caller_cidr(backend)
        group_id = await ec2.find_security_group(settings.security_group)
        if group_id is None:
            progress(f"creating security group {settings.security_group} (SSH from {cidr} only)")
            group_id = await ec2.create_security_group(
                settings.security_group, "cloudsh: SSH from the machines that launched boxes"
            )
            created_group = True
        if cidr not in await ec2.security_group_cidrs(group_id):
            await ec2.allow_ssh(group_id, cidr)
        kind = "spot" if plan.spot else "on-demand"
        progress(f"launching {plan.name}: {plan.itype.name} {kind}, {plan.disk_gb} GB, {plan.image_name or plan.image_id}")
        inst = await ec2.run_instance(
            LaunchSpec(
                name=plan.name,
                instance_type=plan.itype.name,
                image_id=plan.image_id,
                key_name=key_name,
                security_group_id=group_id,
                disk_gb=plan.disk_gb,
                spot=plan.spot,
            )
        )
    except BaseException:
        await _rollback(backend, key_name if created_key else None, group_id if created_group else None)
        raise
    if not wait:
        return inst
    progress(f"{inst.id} is {inst.state}; waiting for it to run")
    [inst] = await ec2.wait_state([inst.id], {"running"}, timeout=settings.wait_timeout_s)
    progress(f"{inst.label} is running; waiting for SSH")
    await wait_ssh(backend, inst)
    progress(f"{inst.label} is ready")
    return inst


async def _rollback(backend: Backend, key_name: str | None, group_id: str | None) -> None:
    # Best effort: the original error is what the user needs to see.
    try:
        if group_id:
            await backend.ec2.delete_security_group(group_id)
        if key_name:
            await backend.ec2.delete_key_pair(key_name)
    except CloudshError:
        pass


async def start(backend: Backend, insts: Sequence[Instance], *, wait: bool = True, progress: Progress = _quiet) -> list[Instance]:
    for inst in insts:
        if inst.state in ("terminated", "shutting-down"):
            raise InvalidState(f"{inst.label} is {inst.state}", "launch a new one with `cloudsh launch`")
    todo = [i for i in insts if i.state != "running"]
    if todo:
        progress("starting " + ", ".join(i.label for i in todo))
        await backend.ec2.start([i.id for i in todo])
    if not wait:
        return list(insts)
    done = await backend.ec2.wait_state([i.id for i in insts], {"running"}, timeout=backend.settings.wait_timeout_s)
    await asyncio.gather(*(wait_ssh(backend, i) for i in done))
    progress("ready: " + ", ".join(i.label for i in done))
    return done


async def stop(backend: Backend, insts: Sequence[Instance], *, wait: bool = True, progress: Progress = _quiet) -> list[Instance]:
    for inst in insts:
        if inst.state in ("terminated", "shutting-down"):
            raise InvalidState(f"{inst.label} is {inst.state}", "nothing to stop")
    todo = [i for i in insts if i.state not in ("stopped", "stopping")]
    if todo:
        progress("stopping " + ", ".join(i.label for i in todo))
        await backend.ec2.stop([i.id for i in todo])
    if not wait:
        return list(insts)
    return await backend.ec2.wait_state([i.id for i in insts], {"stopped"}, timeout=backend.settings.wait_timeout_s)


@dataclass(frozen=True)
class Loss:
    """What terminating a box destroys, for the confirmation question."""

    instance: Instance
    deleted_volumes: tuple[str, ...]
    kept_volumes: tuple[str, ...]
    #: "job (N files)" for each job whose results on the box are not all home yet.
    results_not_home: tuple[str, ...] = ()
    instance_store_gb: int = 0
    #: When the newest image or snapshot of this box was made; None: never.
    latest_backup: datetime | None = None

    def describe(self) -> str:
        """The box on one line, then one indented line per thing lost or kept."""
        head = f"{self.instance.label} ({self.instance.id}, {self.instance.type}, {self.instance.state})"
        parts: list[str] = []
        if self.deleted_volumes:
            them = "them" if len(self.deleted_volumes) > 1 else "it"
            parts.append("deletes " + ", ".join(self.deleted_volumes) + f" and everything on {them}")
        if self.kept_volumes:
            parts.append("keeps " + ", ".join(self.kept_volumes))
        if self.instance.spot_request_id:
            parts.append(f"cancels spot request {self.instance.spot_request_id}")
        if self.results_not_home:
            parts.append("results not yet home: " + ", ".join(self.results_not_home))
        if self.instance_store_gb:
            parts.append(f"wipes {self.instance_store_gb} GB of instance-store (local NVMe) data")
        parts.append(_backup_note(self.latest_backup))
        return head + "".join(f"\n  - {p}" for p in parts)


def _backup_note(when: datetime | None) -> str:
    if when is None:
        return "no image or snapshot of it exists"
    secs = (datetime.now(UTC) - when).total_seconds()
    ago = f"{secs / 86400:.0f} days" if secs >= 86400 else f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.0f} min"
    return f"latest image/snapshot of it: {ago} ago"


async def terminate_preview(backend: Backend, insts: Sequence[Instance]) -> list[Loss]:
    from cloudsh.ops.storage import latest_backups

    vols = {v.id: v for v in await backend.ec2.volumes()}
    types, backups = await asyncio.gather(
        backend.ec2.instance_types({i.type for i in insts}), latest_backups(backend, insts)
    )
    out = []
    for inst in insts:
        mine = [v for v in vols.values() if v.attached_to == inst.id]
        # DescribeInstances knows which disks die with the box (DescribeVolumes may not say).
        dies = set(inst.deleted_on_termination) | {v.id for v in mine if v.delete_on_termination}
        gone = tuple(f"{v.name or v.id} ({v.size_gb} GB)" for v in mine if v.id in dies)
        kept = tuple(f"{v.name or v.id} ({v.size_gb} GB)" for v in mine if v.id not in dies)
        out.append(
            Loss(
                inst, gone, kept, await _results_not_home(backend, inst),
                instance_store_gb=types[inst.type].instance_storage_gb if inst.type in types else 0,
                latest_backup=backups.get(inst.id),
            )
        )
    return out


async def _results_not_home(backend: Backend, inst: Instance) -> tuple[str, ...]:
    """Jobs with results still only on this box (asks the box only if it has such jobs)."""
    from cloudsh.ops.jobs import job_tags, results_not_home

    if inst.state != "running" or not any(t.remote_dir for t in job_tags(inst).values()):
        return ()
    try:
        pending = await results_not_home(backend, inst)
    except CloudshError:
        return ("unknown (the box does not answer)",)
    return tuple(f"{job} ({n} file{'s' if n != 1 else ''})" for job, n in sorted(pending.items()) if n)


async def terminate(backend: Backend, insts: Sequence[Instance], *, wait: bool = False, progress: Progress = _quiet) -> None:
    # Cancel spot requests first: a persistent request would otherwise launch a new box.
    requests = [i.spot_request_id for i in insts if i.spot_request_id]
    if requests:
        progress("cancelling spot requests " + ", ".join(requests))
        await backend.ec2.cancel_spot_requests(requests)
    progress("terminating " + ", ".join(i.label for i in insts))
    await backend.ec2.terminate([i.id for i in insts])
    if wait:
        await backend.ec2.wait_state([i.id for i in insts], {"terminated"}, timeout=backend.settings.wait_timeout_s)


@dataclass(frozen=True)
class ResizePlan:
    instance: Instance
    old: InstanceType
    new: InstanceType
    price_before: Price | None
    price_after: Price | None
    #: What the vCPU quota check found (`check_resize_room`), shown with the plan.
    quota_note: str = ""

    def describe(self) -> str:
        def fmt(t: InstanceType, p: Price | None) -> str:
            cost = f"${p.on_demand:.4g}/h" if p and p.on_demand is not None else "price unknown"
            gpus = f", {t.gpus}" if t.gpus else ""
            return f"{t.name} ({t.vcpus} vCPU, {t.memory_gib:g} GiB{gpus}, {cost})"

        verb = "stop, change and start again" if self.instance.state == "running" else "change"
        note = f" ({self.quota_note})" if self.quota_note else ""
        return f"{self.instance.label}: {fmt(self.old, self.price_before)} -> {fmt(self.new, self.price_after)}; will {verb}{note}"


async def plan_resize(backend: Backend, inst: Instance, new_type: str) -> ResizePlan:
    if inst.state not in ("running", "stopped"):
        raise InvalidState(
            f"{inst.label} is {inst.state}",
            "resize a box that is running or stopped (wait for it to settle)",
        )
    types = await backend.ec2.instance_types([inst.type])
    new = await backend.ec2.instance_type(new_type)
    old = types.get(inst.type) or InstanceType(inst.type, 0, 0.0)
    if new.name == old.name:
        raise UsageError(f"{inst.label} is already a {new.name}", "")
    if new.architectures and inst.architecture not in new.architectures:
        raise UsageError(
            f"{new.name} runs {'/'.join(new.architectures)} but {inst.label}'s image is {inst.architecture}",
            f"pick an {inst.architecture} type",
        )
    note = await check_resize_room(backend, inst, new)
    prices = await backend.pricing.prices([old.name, new.name], strict=False)
    return ResizePlan(inst, old, new, prices.get(old.name), prices.get(new.name), note)


async def check_resize_room(backend: Backend, inst: Instance, new: InstanceType) -> str:
    """Refuse, before anything stops, a type not offered in the box's AZ or over the vCPU
    quota of its family class (on-demand and spot quotas are separate); returns a note."""
    from cloudsh.services.quotas import QuotaService, family_class

    ec2 = backend.ec2
    if inst.az and not await ec2.offered_in_az(new.name, inst.az):
        raise UsageError(
            f"{new.name} is not offered in {inst.az}, where {inst.label} is",
            "pick another type, or freeze the box and launch its image in an AZ that offers it",
        )
    if inst.state != "running":
        return ""  # a stopped box stays stopped: nothing counts against the quota yet
    spot = inst.market == "spot"
    quota = await QuotaService(backend.clients).vcpu_quota(new.name, spot=spot)
    if quota.limit is None:
        return f"{quota.name} could not be read"
    others = [
        i for i in await ec2.list_instances()
        if i.id != inst.id and i.state in ("running", "pending")
        and (i.market == "spot") == spot and family_class(i.type) == quota.family_class
    ]
    types = await ec2.instance_types({i.type for i in others})
    used = sum(types[i.type].vcpus for i in others if i.type in types)
    need = used + new.vcpus
    if need > quota.limit:
        in_use = f", {used} in use by other boxes" if used else ""
        raise UsageError(
            f"{new.name} needs {new.vcpus} vCPUs but your {quota.name} is {quota.limit:g}{in_use}",
            "pick a smaller type, or ask AWS for more: `aws service-quotas request-service-quota-increase "
            f"--service-code ec2 --quota-code {quota.code} --desired-value {need}`",
        )
    return f"{quota.name}: {need} of {quota.limit:g} vCPUs in use after"


async def resize(backend: Backend, plan: ResizePlan, *, progress: Progress = _quiet) -> Instance:
    inst, ec2 = plan.instance, backend.ec2
    was_running = inst.state == "running"
    if was_running:
        progress(f"stopping {inst.label}")
        await ec2.stop([inst.id])
        await ec2.wait_state([inst.id], {"stopped"}, timeout=backend.settings.wait_timeout_s)
    progress(f"changing {inst.label} from {plan.old.name} to {plan.new.name}")
    try:
        await ec2.set_type(inst.id, plan.new.name)
    except CloudshError:
        if was_running:
            progress(f"change refused; starting {inst.label} again as {plan.old.name}")
            await ec2.start([inst.id])
        raise
    if was_running:
        progress(f"starting {inst.label}")
        try:
            await ec2.start([inst.id])
        except CloudshError as exc:
            hint = f"try `cloudsh start {inst.label}` later, or go back with `cloudsh resize {inst.label} {plan.old.name}`"
            if isinstance(exc, CapacityError):
                # Front ends catch this to offer the previous type back.
                raise CapacityError(
                    f"{inst.label} is now a {plan.new.name} but did not start: AWS has no {plan.new.name} "
                    f"capacity in {inst.az} right now", hint, exc.code,
                ) from None
            raise CloudshError(f"{inst.label} is now a {plan.new.name} but did not start: {exc}", hint) from None
        [inst] = await ec2.wait_state([inst.id], {"running"}, timeout=backend.settings.wait_timeout_s)
        progress(f"{inst.label} is running; waiting for SSH")
        await wait_ssh(backend, inst)
    else:
        [inst] = await ec2.list_instances(ids=[inst.id])
    progress(f"{inst.label} is now a {plan.new.name}")
    return inst
