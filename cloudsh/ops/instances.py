"""Multi-step instance workflows: launch, wait until SSH answers, resize, terminate.

UI-agnostic: progress goes to a callback, errors are `CloudshError`s, and each
workflow leaves nothing half-done that it created itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace

from cloudsh.errors import AWSError, CapacityError, CloudshError, InvalidState, UsageError
from cloudsh.models import (
    INTERRUPTED_HINT,
    TAG_IMAGE_FAMILY,
    Image,
    Instance,
    InstanceType,
    Price,
    Prices,
    box_hourly,
    image_family,
    job_tags,
)
from cloudsh.ops import claims, launch_once, placement
from cloudsh.ops.events import Progress, quiet, ticking
from cloudsh.ops.gpu import DriverCheck, check_driver, install_driver, show_gpu
from cloudsh.ops.idle import delete_backstops, parse_after, set_idle_stop
from cloudsh.ops.jobs.state import record_before_shutdown
from cloudsh.ops.owners import check_acts_on
from cloudsh.ops.placement import Place
from cloudsh.ops.reach import covers, mark_allowed, open_ssh, rule_description, wait_ssh
from cloudsh.ops.whereabouts import Addresses
from cloudsh.services.backend import Backend
from cloudsh.services.ec2 import LaunchSpec
from cloudsh.services.keys import ensure_key, key_pair_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def check_name(name: str) -> None:
    if not _NAME.match(name) or name.startswith("i-"):
        raise UsageError(
            f"{name!r} is not a usable instance name",
            "use letters, digits, '.', '_' or '-' (not starting with 'i-'), up to 63 characters",
        )


@dataclass(frozen=True)
class LaunchPlan:
    name: str
    itype: InstanceType
    image_id: str
    image_name: str
    spot: bool
    disk_gb: int
    root_device: str
    #: `models.image_family` of the image, kept in the box's tag for `ls` and `show`.
    image_family: str = ""
    #: Where to try, in order (`placement.places`); a capacity error moves to the next.
    places: tuple[Place, ...] = ()
    #: Idle stop after this many seconds (`ops.idle`), None for off.
    idle_stop_s: float | None = None
    #: Ids of earlier boxes of this name that are gone (they make the launch's ClientToken).
    earlier: tuple[str, ...] = ()
    #: The box an interrupted run of this same launch left: waited for, not made again.
    adopt: Instance | None = None


async def plan_launch(
    backend: Backend,
    name: str,
    *,
    instance_type: str | None = None,
    spot: bool = False,
    disk_gb: int | None = None,
    image: str | None = None,
    az: str | None = None,
    subnet: str | None = None,
    idle_stop: str | None = None,
) -> LaunchPlan:
    """Every check that can fail before anything is created: name, type, image, where
    (`--az`, `--subnet`, a default VPC) and the vCPU quota."""
    check_name(name)
    idle_stop_s = parse_after(idle_stop or backend.settings.idle_stop)
    ec2 = backend.ec2
    if disk_gb is not None and not 8 <= disk_gb <= 16384:
        raise UsageError(f"--disk {disk_gb} is out of range", "use 8 to 16384 GB")
    if instance_type is not None and not instance_type.strip():
        raise UsageError("--type is empty", "name an instance type, e.g. t3.medium (see `cloudsh prices`)")
    existing, itype = await asyncio.gather(
        ec2.list_instances(include_terminated=True), ec2.instance_type(instance_type or backend.settings.default_type)
    )
    # A colleague's box of that name does not clash: names mean cloudsh's own boxes first.
    mine = [i for i in existing if i.name == name and i.managed]
    clash = [i for i in mine if i.is_live]
    if clash:
        key_name = key_pair_name(backend.settings.key_name, ensure_key(backend.settings.key_path))
        adopt = launch_once.adoptable(clash[0], key_name, itype.name)
        return LaunchPlan(name, itype, adopt.image_id, "", adopt.market == "spot", 0, "", adopt=adopt)
    if spot and not itype.spot_supported:
        raise UsageError(f"{itype.name} cannot run as spot", "launch it without --spot")
    if image:
        img = await ec2.find_image(image)
    else:
        arch = "x86_64" if "x86_64" in itype.architectures else (itype.architectures or ("x86_64",))[0]
        img = await ec2.default_image(arch, nvidia=itype.nvidia)
    if itype.architectures and img.architecture not in itype.architectures:
        raise UsageError(
            f"{itype.name} runs {'/'.join(itype.architectures)} but image {img.name or img.id} "
            f"is {img.architecture}",
            f"pick an {img.architecture} type or an image built for {itype.architectures[0]}",
        )
    if img.state and img.state != "available":
        raise UsageError(f"image {img.name or img.id} is {img.state}", "wait until it is available")
    disk = _root_size(img, disk_gb, backend.settings.default_disk_gb)
    prices = asyncio.ensure_future(backend.pricing.prices([itype.name], strict=False)) if spot and not az and not subnet else None
    try:
        where, _ = await asyncio.gather(
            placement.places(backend, itype, spot=spot, az=az, subnet=subnet, prices=prices),
            placement.check_quota(backend, itype, spot=spot, instances=existing),
        )
    finally:
        if prices is not None:
            prices.cancel()
    return LaunchPlan(
        name, itype, img.id, img.name, spot, disk, _root_device(img), image_family=image_family(img), places=tuple(where),
        idle_stop_s=idle_stop_s,
        earlier=tuple(i.id for i in mine),
    )


def _root_size(img: Image, disk_gb: int | None, default_gb: int) -> int:
    """The root volume's size: the image's root snapshot is the floor, since EC2 refuses
    a smaller volume (InvalidBlockDeviceMapping) only after the key and group exist."""
    if disk_gb is None:
        return max(default_gb, img.root_size_gb)
    if disk_gb < img.root_size_gb:
        raise UsageError(
            f"image {img.name or img.id} needs a root disk of at least {img.root_size_gb} GB",
            f"use --disk {img.root_size_gb} or more",
        )
    return disk_gb


def _root_device(img: Image) -> str:
    """The image's root device name: only a mapping on it sizes the root volume."""
    if not img.root_device:
        raise UsageError(
            f"image {img.name or img.id} names no root device, so its root disk cannot be sized",
            "pick an EBS-backed image (`cloudsh images`, or the default Ubuntu)",
        )
    return img.root_device


async def launch(
    backend: Backend,
    plan: LaunchPlan,
    *,
    wait: bool = True,
    progress: Progress = quiet,
) -> Instance:
    """Create the box; roll back the key pair and security group if this call made them.

    The box's id (and $/h where known) goes to `progress` as soon as EC2 returns it; an
    error after that names the box and says that it bills, so none is left unreported.
    """
    ec2, settings = backend.ec2, backend.settings
    run = launch_once.new_run()
    if plan.adopt is not None:
        inst = plan.adopt
        progress(f"{inst.id} ({plan.name}) was left by an interrupted launch; waiting for it, not launching another")
        await ec2.set_tags([inst.id], {launch_once.TAG_LAUNCH: run})
        return await _until_ready(backend, plan, inst, wait=wait, progress=progress)
    # Asked now, so the price is known by the time the box exists (and never delays it).
    price = asyncio.ensure_future(backend.pricing.prices([plan.itype.name], strict=False))
    public_key = ensure_key(settings.key_path)
    key_name = key_pair_name(settings.key_name, public_key)
    created_key = created_group = False
    group_id: str | None = None
    try:
        # Another launch on this machine may make the key pair or the group at the same
        # moment (EC2 says Duplicate): its name is the key's fingerprint, so it is this one.
        if not await ec2.key_pair_exists(key_name):
            progress(f"importing key pair {key_name}")
            try:
                await ec2.import_key_pair(key_name, public_key)
                created_key = True
            except AWSError as exc:
                if exc.code != "InvalidKeyPair.Duplicate":
                    raise
                ec2.created(key_name)  # just made: calls naming it ride out EC2's delay
        address = await backend.address.current()
        vpc_id = plan.places[0].vpc_id if plan.places else None
        group_id = await ec2.find_security_group(settings.security_group, vpc_id)
        if group_id is None:
            progress(f"creating security group {settings.security_group} (SSH from {address} only)")
            try:
                group_id = await ec2.create_security_group(
                    settings.security_group, "cloudsh: SSH from the machines that launched boxes", vpc_id
                )
                created_group = True
                await ec2.allow_ssh(group_id, f"{address}/32", rule_description(backend))
            except AWSError as exc:
                if exc.code != "InvalidGroup.Duplicate":
                    raise
                group_id = await ec2.find_security_group(settings.security_group, vpc_id)
                if group_id is None:
                    raise
        if not created_group:
            # Listings show a group at once, calls naming it may not yet: another launch
            # may have made it a moment ago, so those calls ride out EC2's delay.
            ec2.created(group_id)
        if not created_group and not covers(rules := await ec2.ssh_rules([group_id]), address):
            progress(await open_ssh(backend, group_id, address, rules))
        kind = "spot" if plan.spot else "on-demand"
        progress(f"launching {plan.name}: {plan.itype.name} {kind}, {plan.disk_gb} GB, {plan.image_name or plan.image_id}")
        spec = LaunchSpec(
            name=plan.name,
            instance_type=plan.itype.name,
            image_id=plan.image_id,
            key_name=key_name,
            security_group_id=group_id,
            disk_gb=plan.disk_gb,
            root_device=plan.root_device,
            spot=plan.spot,
            tags={launch_once.TAG_LAUNCH: run, **({TAG_IMAGE_FAMILY: plan.image_family} if plan.image_family else {})},
            client_token=launch_once.client_token(
                plan.name, key_name, plan.itype.name, plan.image_id, plan.disk_gb, plan.spot, plan.earlier
            ),
        )
        try:
            inst = await _run_somewhere(backend, plan, spec, progress)
            if inst.state in ("terminated", "shutting-down"):  # a token EC2 still remembers from a gone box
                inst = await _run_somewhere(backend, plan, replace(spec, client_token=launch_once.new_run()), progress)
        except AWSError as exc:
            raise launch_once.lost_race(exc, plan.name) or exc from None
    except BaseException as exc:
        price.cancel()
        if not isinstance(exc, launch_once.LostRace):  # the other run's box needs the key pair and group
            await _rollback(backend, key_name if created_key else None, group_id if created_group else None)
        raise
    launch_once.check_won(inst, plan.name, run)
    mark_allowed(backend, inst.id, address)
    progress(f"launched {inst.id} ({plan.name}, {await _hourly(price, plan.spot, inst.az)}); it bills from now")
    return await _until_ready(backend, plan, inst, wait=wait, progress=progress)


async def _until_ready(backend: Backend, plan: LaunchPlan, inst: Instance, *, wait: bool, progress: Progress) -> Instance:
    """Wait until the new box runs and SSH answers. An error or Ctrl-C says that it bills;
    after Ctrl-C the same `launch` again waits for this box instead of making another."""
    ec2, settings = backend.ec2, backend.settings
    if not wait:
        if plan.idle_stop_s is not None:
            progress(f"idle stop not set without waiting for SSH; `cloudsh idle {plan.name} {plan.idle_stop_s:g}s` sets it")
        return inst
    try:
        progress(f"{inst.id} is {inst.state}; waiting for it to run")
        async with ticking(progress, f"{inst.id}: waiting for it to run"):
            [inst] = await ec2.wait_state([inst.id], {"running"}, timeout=settings.wait_timeout_s, max_interval=0.5)
        if not backend.sandbox and not inst.public_ip:
            raise CloudshError(
                f"it got no public IPv4 address ({inst.az}), so SSH from here cannot reach it",
                "launch into a subnet whose VPC has an internet gateway (--subnet)",
            )
        progress(f"{inst.label} is running; waiting for SSH")
        async with ticking(progress, f"{inst.label}: waiting for SSH"):
            await wait_ssh(backend, inst, progress=progress)
    except CloudshError as exc:
        raise CloudshError(
            f"{inst.id} ({plan.name}) was launched and is billing, but {exc.message}",
            f"see it with `cloudsh ls`; `cloudsh terminate {inst.id}` ends it",
        ) from None
    except asyncio.CancelledError:  # Ctrl-C
        await ec2.set_tags([inst.id], {launch_once.TAG_LAUNCH: launch_once.INTERRUPTED})
        progress(
            f"interrupted: {inst.id} ({plan.name}) was launched and is billing; the same "
            f"`cloudsh launch {plan.name}` waits for it, `cloudsh terminate {inst.id}` ends it"
        )
        raise
    progress(f"{inst.label} is ready")
    await _idle_stop(backend, inst, plan, progress)
    return inst


async def _idle_stop(backend: Backend, inst: Instance, plan: LaunchPlan, progress: Progress) -> None:
    """Announce the new box's idle stop in one line; a failure to set it leaves the box up."""
    if plan.idle_stop_s is None:
        progress(f"{inst.label}: idle stop off (`cloudsh idle {inst.label} 60m` turns it on)")
        return
    try:
        progress(await set_idle_stop(backend, inst, plan.idle_stop_s))
    except CloudshError as exc:
        progress(f"{inst.label}: idle stop not set: {exc.message}; `cloudsh idle {inst.label} 60m` tries again")


async def _run_somewhere(backend: Backend, plan: LaunchPlan, spec: LaunchSpec, progress: Progress) -> Instance:
    """RunInstances in each planned place until one has capacity, saying so as it moves on."""
    places = plan.places or (Place(""),)
    tried: list[str] = []
    for n, place in enumerate(places):
        try:
            return await backend.ec2.run_instance(dataclasses.replace(
                spec, az=place.az or None, subnet_id=place.subnet.id if place.subnet else None,
                # A subnet that gives no public address is asked for one, or SSH could never answer.
                public_ip=place.subnet is not None and not place.subnet.public_on_launch,
            ))
        except CapacityError:
            tried.append(place.az)
            if n + 1 < len(places):
                progress(f"no {plan.itype.name} capacity in {place.label} right now; trying {places[n + 1].label}")
    where = ", ".join(tried) if tried != [""] else backend.ec2.region
    raise CapacityError(
        f"AWS has no {plan.itype.name} {'spot' if plan.spot else 'on-demand'} capacity in {where} right now",
        "try again in a few minutes, "
        + ("another AZ (--az, --subnet) or " if len(places) == 1 else "")
        + "another type (--type)" + (", or on-demand instead of spot" if plan.spot else ""),
        "InsufficientInstanceCapacity",
    )


async def _hourly(price: asyncio.Future[Prices], spot: bool, az: str) -> str:
    """The box's $/h (a spot box's at its own AZ's price) if its price came in within a
    moment, else "price unknown"."""
    done, _ = await asyncio.wait({price}, timeout=1.0)
    if not done or price.exception() is not None:
        price.cancel()
        return "price unknown"
    usd, _ = box_hourly(next(iter(price.result().values()), None), "spot" if spot else "on-demand", az)
    return f"${usd:.4g}/h" if usd is not None else "price unknown"


async def _rollback(backend: Backend, key_name: str | None, group_id: str | None) -> None:
    # Best effort: the original error is what the user needs to see.
    try:
        if group_id:
            await backend.ec2.delete_security_group(group_id)
        if key_name:
            await backend.ec2.delete_key_pair(key_name)
    except CloudshError:
        pass


async def start(
    backend: Backend,
    insts: Sequence[Instance],
    *,
    wait: bool = True,
    pull_results: bool = True,
    progress: Progress = quiet,
) -> list[Instance]:
    """Start the boxes and (with `wait`) wait until SSH answers; then, unless told not to,
    bring home what their jobs wrote while nobody was syncing (`pull_results_home`).
    A box cloudsh did not launch is started only alone (`owners.check_acts_on`)."""
    check_acts_on(insts, "start", destructive=False)
    for inst in insts:
        if inst.state in ("terminated", "shutting-down"):
            raise InvalidState(f"{inst.label} is {inst.state}", "launch a new one with `cloudsh launch`")
        if inst.interrupted:  # EC2 refuses it too (IncorrectSpotRequestState)
            raise InvalidState(f"{inst.label} is {inst.status()}", INTERRUPTED_HINT.format(name=inst.label))
    todo = [i for i in insts if i.state != "running"]
    states: dict[str, str] = {}
    stopping = [i for i in todo if i.state == "stopping"]
    if stopping:  # EC2 starts a box only once it has stopped (IncorrectInstanceState)
        progress("waiting for " + ", ".join(i.label for i in stopping) + " to stop first")
        await backend.ec2.wait_state([i.id for i in stopping], {"stopped"}, timeout=backend.settings.wait_timeout_s)
    if todo:
        progress("starting " + ", ".join(i.label for i in todo))
        states = await backend.ec2.start([i.id for i in todo])
    if not wait:
        return [replace(i, state=states.get(i.id, i.state)) for i in insts]
    done = await backend.ec2.wait_state([i.id for i in insts], {"running"}, timeout=backend.settings.wait_timeout_s)
    await asyncio.gather(*(wait_ssh(backend, i, progress=progress) for i in done))
    progress("ready: " + ", ".join(i.label for i in done))
    if pull_results:
        await pull_results_home(backend, done, progress=progress)
    return done


async def pull_results_home(backend: Backend, insts: Sequence[Instance], *, progress: Progress = quiet) -> None:
    """A box back from a stop (e.g. a spot interruption) sends home what its jobs wrote.

    The box is up either way: a failed pull is said through `progress`, never raised.
    """
    from cloudsh.ops.jobs import sync_all  # only boxes with jobs need it (keeps `start` light)

    if not any(t.remote_dir for i in insts for t in job_tags(i).values()):
        return
    try:
        for r in await sync_all(backend, progress=progress, only=[i.id for i in insts]):
            if r.copied:
                progress(f"job {r.job_id}: {len(r.copied)} result file(s) brought home to {r.local_dir}")
    except CloudshError as exc:
        progress(f"results not pulled yet: {exc} (run `cloudsh sync` later)")


async def stop(
    backend: Backend,
    insts: Sequence[Instance],
    *,
    wait: bool = True,
    by_id: Collection[str] = (),
    progress: Progress = quiet,
) -> list[Instance]:
    """Stop the boxes; one cloudsh did not launch only alone and named by its id (`by_id`)."""
    check_acts_on(insts, "stop", by_id=by_id)
    for inst in insts:
        if inst.state in ("terminated", "shutting-down"):
            raise InvalidState(f"{inst.label} is {inst.state}", "nothing to stop")
    todo = [i for i in insts if i.state not in ("stopped", "stopping")]
    states: dict[str, str] = {}
    if todo:
        await record_before_shutdown(backend, todo)
        progress("stopping " + ", ".join(i.label for i in todo))
        states = await backend.ec2.stop([i.id for i in todo])
        Addresses(backend.settings.cache_dir).forget(i.id for i in todo)  # EC2 takes the address back
    if not wait:
        return [replace(i, state=states.get(i.id, i.state)) for i in insts]
    launched, down = {i.id: i.launch_time for i in insts}, set()

    def started_again(inst: Instance) -> bool:  # by someone else between two polls: this stop is done
        down.update([inst.id] if inst.state in ("stopping", "stopped") else [])
        return inst.state in ("pending", "running") and (inst.id in down or inst.launch_time != launched[inst.id])

    found = await backend.ec2.wait_state([i.id for i in insts], {"stopped"}, timeout=backend.settings.wait_timeout_s,
                                         or_else=started_again)
    for inst in (i for i in found if i.state != "stopped"):
        progress(f"{inst.label} stopped and was started again meanwhile (it is {inst.state})")
    return found


async def terminate(
    backend: Backend,
    insts: Sequence[Instance],
    *,
    wait: bool = False,
    by_id: Collection[str] = (),
    progress: Progress = quiet,
) -> None:
    """Terminate the boxes; one cloudsh did not launch only alone and named by its id (`by_id`)."""
    check_acts_on(insts, "terminate", by_id=by_id)
    # Cancel spot requests first: a persistent request would otherwise launch a new box.
    requests = [i.spot_request_id for i in insts if i.spot_request_id]
    if requests:
        progress("cancelling spot requests " + ", ".join(requests))
        await backend.ec2.cancel_spot_requests(requests)
    await record_before_shutdown(backend, insts)
    progress("terminating " + ", ".join(i.label for i in insts))
    await backend.ec2.terminate([i.id for i in insts])
    await delete_backstops(backend, list(insts))
    Addresses(backend.settings.cache_dir).forget(i.id for i in insts)
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
    #: The box's NVIDIA driver, for a new type with an NVIDIA GPU (`ops/gpu.py`).
    driver: DriverCheck | None = None

    def describe(self) -> str:
        def fmt(t: InstanceType, p: Price | None) -> str:
            cost = f"${p.on_demand:.4g}/h" if p and p.on_demand is not None else "price unknown"
            gpus = f", {t.gpus}" if t.gpus else ""
            return f"{t.name} ({t.vcpus} vCPU, {t.memory_gib:g} GiB{gpus}, {cost})"

        verb = "stop, change and start again" if self.instance.state == "running" else "change"
        note = f" ({self.quota_note})" if self.quota_note else ""
        driver = f"\n{self.driver.describe(self.instance.label)}" if self.driver and not self.driver.present else ""
        return (f"{self.instance.label}: {fmt(self.old, self.price_before)} -> {fmt(self.new, self.price_after)}; "
                f"will {verb}{note}{driver}")


async def plan_resize(backend: Backend, inst: Instance, new_type: str, *, by_id: Collection[str] = ()) -> ResizePlan:
    """Every check before anything stops; a box cloudsh did not launch must be named by its id."""
    check_acts_on([inst], "resize", by_id=by_id)
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
    driver = await check_driver(backend, inst, new)
    prices = await backend.pricing.prices([old.name, new.name], strict=False)
    return ResizePlan(inst, old, new, prices.get(old.name), prices.get(new.name), note, driver)


async def check_resize_room(backend: Backend, inst: Instance, new: InstanceType) -> str:
    """Refuse, before anything stops, a type not offered in the box's AZ or over the vCPU
    quota of its family class (on-demand and spot quotas are separate); returns a note."""
    ec2 = backend.ec2
    if inst.az and not await ec2.offered_in_az(new.name, inst.az):
        raise UsageError(
            f"{new.name} is not offered in {inst.az}, where {inst.label} is",
            "pick another type, or freeze the box and launch its image in an AZ that offers it",
        )
    if inst.state != "running":
        return ""  # a stopped box stays stopped: nothing counts against the quota yet
    return await placement.check_quota(backend, new, spot=inst.market == "spot", besides=[inst.id])


#: Asked when a resized box cannot start for want of capacity of its new type: answer
#: True to change it back to its old type and start it, so it is not left stopped.
GoBack = Callable[[CapacityError], Awaitable[bool]]


async def resize(
    backend: Backend, plan: ResizePlan, *, go_back: GoBack | None = None, progress: Progress = quiet
) -> Instance:
    """Install the NVIDIA driver first if the new type's GPU needs one the box lacks; stop
    (if running), change the type, start again, and show the GPU `nvidia-smi` reports.
    When AWS has no capacity for the new type, `go_back` (if given) decides whether to
    return to the old type; without it, or when it says no, the `CapacityError` is raised
    and the box stays stopped."""
    async with claims.busy(backend, plan.instance, f"resize {plan.instance.label} {plan.new.name}") as now:
        if (now.type, now.state) != (plan.instance.type, plan.instance.state):
            raise InvalidState(
                f"{now.label} changed since this resize was planned: it is now a {now.type}, {now.state}",
                "look at it again (`cloudsh show`) and resize from there",
            )
        return await _resize(backend, plan, go_back, progress)


async def _resize(backend: Backend, plan: ResizePlan, go_back: GoBack | None, progress: Progress) -> Instance:
    if plan.driver is not None and plan.driver.needs_install:
        await install_driver(backend, plan.instance, plan.driver.package, progress=progress)
    try:
        inst = await _change_type(backend, plan, progress)
    except CapacityError as exc:
        if go_back is None or not await go_back(exc):
            raise
    else:
        if plan.driver is not None and plan.driver.present is not None and inst.state == "running":
            await show_gpu(backend, inst, progress=progress)
        return inst
    stopped = await backend.ec2.get_instance(plan.instance.id)
    # The plan being undone passed the ownership check; going back is part of it.
    back = await plan_resize(backend, stopped, plan.old.name, by_id=[stopped.id])
    await _change_type(backend, back, progress)
    # It ran a moment ago, so its jobs have nothing new to bring home.
    [inst] = await start(backend, [stopped], pull_results=False, progress=progress)
    return inst


async def _change_type(backend: Backend, plan: ResizePlan, progress: Progress) -> Instance:
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
                # `resize` offers the previous type back (through `go_back`).
                raise CapacityError(
                    f"{inst.label} is now a {plan.new.name} but did not start: AWS has no {plan.new.name} "
                    f"capacity in {inst.az} right now", hint, exc.code,
                ) from None
            raise CloudshError(f"{inst.label} is now a {plan.new.name} but did not start: {exc}", hint) from None
        [inst] = await ec2.wait_state([inst.id], {"running"}, timeout=backend.settings.wait_timeout_s)
        progress(f"{inst.label} is running; waiting for SSH")
        await wait_ssh(backend, inst, progress=progress)
    else:
        [inst] = await ec2.list_instances(ids=[inst.id])
    progress(f"{inst.label} is now a {plan.new.name}")
    return inst
