"""A box moved onto a new box made from an image of its disk: `relaunch` (an interrupted
spot box, now, on spot or on-demand) and `resize` of a spot box, whose type EC2 cannot
change ("Behavior of Spot Instance interruptions",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/interruption-behavior.html).

The steps, each undone in reverse if a later one fails, so the old box is left as it was:

1. the jobs running on the old box pause (SIGTERM, recorded as interrupted, as for a spot
   notice), so the image holds their checkpoints;
2. an image of its disk (without a reboot: the jobs are paused and their writes synced);
3. a new box of that image, of the new type and market, in the old box's AZ if it has
   volumes (else where EC2 has capacity), named NAME-moving until the move is done; the
   image carries the jobs and the crontab line that resumes them (with CLOUDSH_RESUME=1)
   when the new box boots;
4. data volumes move: unmounted and detached from the old box, attached to the new one and
   mounted where they were;
5. the old box's tags (its jobs' records among them) are copied to the new box.

Then, and only once the new box has answered SSH, the old box is terminated (its spot
request cancelled first), the new box takes the name, and the image is deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from cloudsh.errors import CloudshError, InvalidState, UsageError
from cloudsh.models import (
    JOB_TAG_PREFIX,
    HostInfo,
    Instance,
    InstanceType,
    Volume,
    hourly_cost,
    job_tags,
)
from cloudsh.ops import instances
from cloudsh.ops import volumes as vols
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.images import TAG_SOURCE
from cloudsh.ops.instances import (
    GoBack,
    LaunchPlan,
    ResizePlan,
    check_resize_room,
    launch,
    terminate,
)
from cloudsh.ops.jobs.box import box_status, call_agent
from cloudsh.ops.owners import check_acts_on
from cloudsh.ops.placement import Place
from cloudsh.ops.poll import wait_for_state
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

Undo = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class MovePlan:
    instance: Instance
    old: InstanceType
    new: InstanceType
    spot: bool
    volumes: tuple[Volume, ...]
    jobs: tuple[str, ...]
    price_before: float | None
    price_after: float | None
    verb: str  # "resize" | "relaunch"

    @property
    def market(self) -> str:
        return "spot" if self.spot else "on-demand"

    def describe(self) -> str:
        inst = self.instance

        def cost(p: float | None) -> str:
            return f"${p:.4g}/h" if p is not None else "price unknown"

        what = "resized by moving it to a new box (EC2 cannot change a spot box's type)" if self.verb == "resize" \
            else "relaunched as a new box from its disk"
        vols_text = ", ".join(v.name or v.id for v in self.volumes) or "none"
        jobs_text = ", ".join(self.jobs) or "none"
        pause = "; its running jobs pause first (as for a spot notice)" if inst.state == "running" else ""
        return "\n".join([
            f"{inst.label} ({inst.id}) will be {what}:",
            f"  {self.old.name} {inst.market} ({cost(self.price_before)}) -> "
            f"{self.new.name} {self.market} ({cost(self.price_after)})" + (f", in {inst.az}" if self.volumes else ""),
            f"  1. an image of its disk{pause}",
            f"  2. a new {self.new.name} {self.market} box from that image, named {inst.label}",
            f"  3. volumes moved to it: {vols_text}",
            f"  4. jobs carried: {jobs_text} (they resume there by themselves with CLOUDSH_RESUME=1)",
            f"  5. {inst.id} terminated only after the new box answers SSH",
            f"  if any step fails, what was made is removed and {inst.label} is left as it was",
        ])


async def plan_move(
    backend: Backend, inst: Instance, verb: str, *, new_type: str | None = None, spot: bool | None = None,
    by_id: Collection[str] = (),
) -> MovePlan:
    """Every check before anything is made."""
    check_acts_on([inst], verb, by_id=by_id)
    if inst.state not in ("running", "stopped"):
        raise InvalidState(f"{inst.label} is {inst.state}", f"{verb} a box that is running or stopped")
    ec2 = backend.ec2
    old_t = (await ec2.instance_types([inst.type])).get(inst.type) or InstanceType(inst.type, 0, 0.0)
    new_t = await ec2.instance_type(new_type) if new_type else old_t
    market_spot = inst.market == "spot" if spot is None else spot
    if new_t.architectures and inst.architecture not in new_t.architectures:
        raise UsageError(
            f"{new_t.name} runs {'/'.join(new_t.architectures)} but {inst.label}'s image is {inst.architecture}",
            f"pick an {inst.architecture} type",
        )
    if market_spot and not new_t.spot_supported:
        raise UsageError(f"{new_t.name} cannot run as spot", f"{verb} it with --on-demand")
    await check_resize_room(backend, inst, new_t)
    attached = [v for v in await ec2.volumes() if v.attached_to == inst.id and v.id not in inst.deleted_on_termination]
    prices = await backend.pricing.prices(
        sorted({old_t.name, new_t.name}), strict=False, spot_for=[old_t.name, new_t.name]
    )
    return MovePlan(
        inst, old_t, new_t, market_spot, tuple(attached), tuple(sorted(job_tags(inst))),
        hourly_cost(prices.get(old_t.name), inst.market, inst.az),
        hourly_cost(prices.get(new_t.name), "spot" if market_spot else "on-demand", inst.az),
        verb,
    )


async def move(backend: Backend, plan: MovePlan, *, progress: Progress = quiet) -> Instance:
    """Carry out `plan`; on any failure undo every step and say the old box is as it was."""
    old, ec2 = plan.instance, backend.ec2
    undo: list[tuple[str, Undo]] = []
    try:
        await _pause_jobs(backend, old, undo, progress)
        image = await _image(backend, old, progress)
        undo.append((f"deleting image {image[0]}", lambda: _drop_image(backend, image)))
        progress(f"launching the new {plan.new.name} {plan.market} box")
        new = await _launch(backend, plan, image[0], undo, progress)
        for vol in plan.volumes:
            await _move_volume(backend, vol, old, new, undo, progress)
        # cloudsh's records (jobs, settings) and the user's own tags go along; EC2's own
        # (`aws:`) cannot be set, and the name comes last.
        tags = {k: v for k, v in old.tags.items() if k != "Name" and not k.startswith("aws:")}
        if job_tags(old):
            progress(f"moving job records {', '.join(sorted(job_tags(old)))} to the new box")
        if tags:
            await ec2.set_tags([new.id], tags)
    except BaseException as exc:
        await _roll_back(undo, progress)
        if isinstance(exc, CloudshError):
            raise CloudshError(
                f"{plan.verb} of {old.label} failed: {exc.message}; rolled back, {old.label} is as it was",
                exc.hint,
            ) from None
        raise
    # The new box answers SSH: the old one can go.
    # A job is found by its tag: only the new box may hold it.
    moved = [k for k in tags if k.startswith(JOB_TAG_PREFIX)]
    if moved:
        with contextlib.suppress(CloudshError):
            await ec2.call("delete_tags", Resources=[old.id], Tags=[{"Key": k} for k in moved])
    await terminate(backend, [old], wait=True, by_id=[old.id], progress=progress)
    if old.name:
        await ec2.set_tags([new.id], {"Name": old.name})
    else:
        await ec2.call("delete_tags", Resources=[new.id], Tags=[{"Key": "Name"}])
    with contextlib.suppress(CloudshError):
        await _drop_image(backend, image)
    [done] = await ec2.list_instances(ids=[new.id])
    progress(f"{done.label} is now {done.id}, a {done.type} {done.market} box")
    return done


async def _pause_jobs(backend: Backend, old: Instance, undo: list[tuple[str, Undo]], progress: Progress) -> None:
    if old.state != "running" or not job_tags(old):
        return
    host = await ssh_host(backend, old)
    running = [jid for jid, st in (await box_status(backend, host)).items() if st.get("state") == "running"]
    for jid in running:
        progress(f"pausing job {jid} on {old.label}")
        await call_agent(backend, host, f"stop {jid} --wait 30 --pause", timeout=60)
        undo.append((f"resuming job {jid} on {old.label}", _resumer(backend, host, jid)))


def _resumer(backend: Backend, host: HostInfo, jid: str) -> Undo:
    return lambda: call_agent(backend, host, f"start {jid} --resume")


async def _image(backend: Backend, old: Instance, progress: Progress) -> tuple[str, tuple[str, ...]]:
    """(image id, its snapshots)."""
    ec2 = backend.ec2
    name = f"{old.label}-move-{int(time.time())}"
    progress(f"making image {name} of {old.label}'s disk")
    image_id = await ec2.create_image(old.id, name, no_reboot=True, tags={"Name": name, TAG_SOURCE: old.id})
    try:
        async def state() -> str:
            img = await ec2.get_image(image_id)
            return img.state if img else "pending"

        await wait_for_state(f"image {image_id}", state, {"available"}, timeout=3600, progress=progress)
        img = await ec2.get_image(image_id)
        if img is None:
            raise CloudshError(f"image {image_id} disappeared", "")
    except BaseException:
        with contextlib.suppress(CloudshError):
            await ec2.deregister_image(image_id)
        raise
    return image_id, img.snapshot_ids


async def _drop_image(backend: Backend, image: tuple[str, tuple[str, ...]]) -> None:
    await backend.ec2.deregister_image(image[0])
    for snap in image[1]:
        await backend.ec2.delete_snapshot(snap)


async def _launch(
    backend: Backend, plan: MovePlan, image_id: str, undo: list[tuple[str, Undo]], progress: Progress
) -> Instance:
    old = plan.instance
    img = await backend.ec2.get_image(image_id)
    if img is None:
        raise CloudshError(f"image {image_id} disappeared", "")
    lp = LaunchPlan(
        name=f"{old.label}-moving"[:63], itype=plan.new, image_id=image_id, image_name=img.name, spot=plan.spot,
        disk_gb=max(img.root_size_gb, 8), root_device=img.root_device or "/dev/sda1",
        # Where its volumes are; with none, wherever EC2 has capacity (an interruption
        # means there is none for its type in its own AZ right now).
        places=(Place(old.az),) if plan.volumes else (),
    )

    async def terminate_new() -> None:  # found by its name: the launch may fail after EC2 made it
        made = [i for i in await backend.ec2.list_instances() if i.name == lp.name and i.is_live]
        if made:
            await terminate(backend, made, wait=True, by_id=[i.id for i in made])

    undo.append(("terminating the new box", terminate_new))
    return await launch(backend, lp, progress=progress)


async def _move_volume(
    backend: Backend, vol: Volume, old: Instance, new: Instance, undo: list[tuple[str, Undo]], progress: Progress
) -> None:
    mount = await vols.mount_point(backend, vol)
    await vols.detach(backend, vol, progress=progress)

    async def back() -> None:
        current = await backend.ec2.get_volume(vol.id)
        if current.attached_to:
            await vols.detach(backend, current, progress=progress)
        await vols.attach(backend, current, old, mount=mount if old.state == "running" else None, progress=progress)

    undo.append((f"moving {vol.name or vol.id} back to {old.label}", back))
    await vols.attach(backend, await backend.ec2.get_volume(vol.id), new, mount=mount, progress=progress)


async def _roll_back(undo: list[tuple[str, Undo]], progress: Progress) -> None:
    for what, step in reversed(undo):
        progress(f"rolling back: {what}")
        try:
            await step()
        except CloudshError as exc:  # keep undoing the rest; say what is left
            progress(f"rolling back {what} failed: {exc}")


# -- resize: the one workflow every front end calls ---------------------------------------


async def plan_resize(
    backend: Backend, inst: Instance, new_type: str, *, by_id: Collection[str] = ()
) -> ResizePlan | MovePlan:
    """A spot box moves to a new box of the new type (EC2 cannot change its type); any
    other box is stopped, changed and started (`ops.instances.plan_resize`)."""
    if inst.market != "spot":
        return await instances.plan_resize(backend, inst, new_type, by_id=by_id)
    if new_type == inst.type:
        raise UsageError(f"{inst.label} is already a {new_type}", "")
    return await plan_move(backend, inst, "resize", new_type=new_type, by_id=by_id)


async def resize(
    backend: Backend, plan: ResizePlan | MovePlan, *, go_back: GoBack | None = None, progress: Progress = quiet
) -> Instance:
    if isinstance(plan, MovePlan):
        return await move(backend, plan, progress=progress)
    return await instances.resize(backend, plan, go_back=go_back, progress=progress)
