"""`Cloud`: one account and region (or the sandbox); verbs take a box NAME as on the command line."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

from cloudsh.api.instance import Instance
from cloudsh.api.results import InstanceList, Table, TunnelHandle
from cloudsh.api.session import Session, price_gate, translate
from cloudsh.config import Settings
from cloudsh.errors import CloudshError
from cloudsh.models import CommandResult, InstanceType, Price
from cloudsh.ops.tunnels import OnTunnelEvent
from cloudsh.root import connect
from cloudsh.services.backend import Backend

#: How long instance names stay fresh for IPython's `cloud["<TAB>` completion.
NAMES_TTL_S = 15.0


class Cloud:
    """One cloud account and region (or the local sandbox): `Cloud()`, `Cloud(sandbox=True)`,
    `Cloud(profile="work", region="us-west-2")`."""

    def __init__(
        self,
        *,
        sandbox: bool | None = None,
        profile: str | None = None,
        region: str | None = None,
        settings: Settings | None = None,
        backend: Backend | None = None,
    ) -> None:
        try:
            self._s = Session(backend or connect(
                settings or Settings.load(), sandbox=sandbox, profile=profile, region=region
            ))
        except Exception as exc:
            new = translate(exc)
            if new is exc:
                raise
            raise new from None

    @property
    def backend(self) -> Backend:
        return self._s.backend

    @property
    def label(self) -> str:
        """`SANDBOX` or `profile/region`."""
        return self._s.backend.label

    @property
    def sandbox(self) -> bool:
        """True on the local sandbox cloud."""
        return self._s.backend.sandbox

    @property
    def region(self) -> str:
        return self._s.backend.target.region

    def __repr__(self) -> str:
        return f"<Cloud {self.label}>"

    def close(self) -> None:
        """Close pooled SSH connections and the API's background loop."""
        self._s.close()

    def __enter__(self) -> Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- instances --------------------------------------------------------------

    async def ainstances(self, *, all: bool = False) -> InstanceList[Instance]:
        found = await self._s.backend.ec2.list_instances(include_terminated=all)
        if not all:
            self._s.remember(found)
        return InstanceList(Instance(self._s, i) for i in found)

    def instances(self, *, all: bool = False) -> InstanceList[Instance]:
        """Live instances as a list that prints as a table (`all=True` adds terminated ones)."""
        return self._s.run(self.ainstances(all=all))

    async def ainstance(self, name: str) -> Instance:
        found = await self._s.backend.ec2.find(name)
        return Instance(self._s, found, by_id=found.id == name)

    def instance(self, name: str) -> Instance:
        """One instance by Name tag or id; `NotFound`/`Ambiguous` (CloudshErrors) otherwise.
        A box cloudsh did not launch stops, resizes or terminates only if looked up by its id."""
        return self._s.run(self.ainstance(name))

    def __getitem__(self, name: str) -> Instance:
        """`cloud["box"]`: the same as `cloud.instance("box")`."""
        return self.instance(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._ipython_key_completions_()

    def _ipython_key_completions_(self) -> list[str]:
        """Instance names and ids for `cloud["bo<TAB>`; re-listed at most every 15 s."""
        if time.monotonic() - self._s.names_at > NAMES_TTL_S:
            # Completion offers what it knew; the lookup itself will report the error.
            with contextlib.suppress(CloudshError):
                self._s.run(self.ainstances())
        return list(self._s.names)

    async def alaunch(
        self,
        name: str,
        type: str | None = None,
        *,
        spot: bool = False,
        disk: int | None = None,
        image: str | None = None,
        wait: bool = True, az: str | None = None, subnet: str | None = None,
        confirm_price: bool = False, max_per_hour: float | None = None,
    ) -> Instance:
        from cloudsh.ops import instances as ops

        plan = await ops.plan_launch(self._s.backend, name, instance_type=type, spot=spot, disk_gb=disk, image=image, az=az, subnet=subnet)
        await price_gate(self._s.backend, plan.itype.name, spot=plan.spot, verb="launch",
                         confirm_price=confirm_price, max_per_hour=max_per_hour)
        inst = Instance(self._s, await ops.launch(self._s.backend, plan, wait=wait))
        self._s.names_at = 0.0
        return inst

    def launch(
        self,
        name: str,
        type: str | None = None,
        *,
        spot: bool = False,
        disk: int | None = None,
        image: str | None = None,
        wait: bool = True, az: str | None = None, subnet: str | None = None,
        confirm_price: bool = False, max_per_hour: float | None = None,
    ) -> Instance:
        """Launch a box called `name` and (unless `wait=False`) wait until SSH answers.

        `type` defaults to your configured type (t3.medium), `disk` the root volume in GB
        (default 60 or the image's size, never below it), `image` an AMI id or name (default:
        current Ubuntu LTS); `spot=True`: a persistent spot request, stopped on interruption.
        `az`/`subnet` pin where it goes (default: each AZ that offers it until one has capacity).
        A type dearer than the `confirm_above_per_hour` setting ($3/h) raises `ConfirmationRefused`
        before anything is created, unless `confirm_price=True` or it is within `max_per_hour`.
        """
        return self._s.run(self.alaunch(name, type, spot=spot, disk=disk, image=image, wait=wait, az=az, subnet=subnet,
                                        confirm_price=confirm_price, max_per_hour=max_per_hour))

    # Verbs by NAME, as on the command line; each is the Instance method of the same name.

    async def astart(self, name: str, *, wait: bool = True) -> Instance:
        return await (await self.ainstance(name)).astart(wait=wait)

    def start(self, name: str, *, wait: bool = True) -> Instance:
        """Start a stopped box and (unless `wait=False`) wait until SSH answers."""
        return self._s.run(self.astart(name, wait=wait))

    async def astop(self, name: str, *, wait: bool = True) -> Instance:
        return await (await self.ainstance(name)).astop(wait=wait)

    def stop(self, name: str, *, wait: bool = True) -> Instance:
        """Stop a box (its disk is kept; you pay only for storage)."""
        return self._s.run(self.astop(name, wait=wait))

    async def aterminate(self, name: str, *, discard_results: bool = False) -> None:
        await (await self.ainstance(name)).aterminate(discard_results=discard_results)

    def terminate(self, name: str, *, discard_results: bool = False) -> None:
        """Terminate a box for good (`Instance.terminate`: its results come home first)."""
        self._s.run(self.aterminate(name, discard_results=discard_results))

    async def aresize(
        self, name: str, type: str, *, go_back: bool = False, confirm_price: bool = False, max_per_hour: float | None = None
    ) -> Instance:
        return await (await self.ainstance(name)).aresize(
            type, go_back=go_back, confirm_price=confirm_price, max_per_hour=max_per_hour
        )

    def resize(
        self, name: str, type: str, *, go_back: bool = False, confirm_price: bool = False, max_per_hour: float | None = None
    ) -> Instance:
        """Change a box's type ("add a GPU"); see `Instance.resize`."""
        return self._s.run(self.aresize(name, type, go_back=go_back, confirm_price=confirm_price, max_per_hour=max_per_hour))

    async def arun(self, name: str, command: str, *, timeout: float | None = None) -> CommandResult:
        return await (await self.ainstance(name)).arun(command, timeout=timeout)

    def run(self, name: str, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run a shell command on a box: a result with `.stdout`, `.stderr`, `.exit_status`."""
        return self._s.run(self.arun(name, command, timeout=timeout))

    async def aput(self, name: str, local: str | Path, remote: str) -> None:
        await (await self.ainstance(name)).aput(local, remote)

    def put(self, name: str, local: str | Path, remote: str) -> None:
        """Copy a local file or directory to a box."""
        self._s.run(self.aput(name, local, remote))

    async def aget(self, name: str, remote: str, local: str | Path) -> None:
        await (await self.ainstance(name)).aget(remote, local)

    def get(self, name: str, remote: str, local: str | Path) -> None:
        """Copy a file or directory from a box."""
        self._s.run(self.aget(name, remote, local))

    async def atunnel(
        self, name: str, port: int, remote_port: int | None = None, *, on_event: OnTunnelEvent | None = None
    ) -> TunnelHandle:
        return await (await self.ainstance(name)).atunnel(port, remote_port, on_event=on_event)

    def tunnel(
        self, name: str, port: int, remote_port: int | None = None, *, on_event: OnTunnelEvent | None = None
    ) -> TunnelHandle:
        """Forward localhost:`port` to `remote_port` (default: the same) on a box; see `Instance.tunnel`."""
        return self._s.run(self.atunnel(name, port, remote_port, on_event=on_event))

    # -- the cloud --------------------------------------------------------------

    async def aprices(self, *, gpu: bool = False, family: str | Sequence[str] | None = None) -> Table:
        from cloudsh.ops import queries

        families = [family] if isinstance(family, str) else list(family or ())
        found = await queries.prices(self._s.backend, families, gpu_only=gpu)
        cols = (("type", "TYPE"), ("vcpus", "VCPUS"), ("memory_gib", "MEM GIB"), ("gpus", "GPUS"),
                ("on_demand", "ON-DEMAND $/H"), ("spot", "SPOT $/H"), ("spot_saving", "SAVING"))
        return Table(found.rows, cols, note=found.note)

    def prices(self, *, gpu: bool = False, family: str | Sequence[str] | None = None) -> Table:
        """Instance types with vCPUs, memory, GPUs, on-demand and current spot $/h. `gpu=True`
        keeps GPU types only; `family="g5"` (or a list) picks families. Rows are dicts
        (`type`, `gpus`, `on_demand`, `spot`, …, `note`: why a price is None)."""
        return self._s.run(self.aprices(gpu=gpu, family=family))

    async def aprice(self, type: str) -> Price:
        from cloudsh.ops import queries

        return await queries.price(self._s.backend, type)

    def price(self, type: str) -> Price:
        """On-demand and current spot $/h of one instance type."""
        return self._s.run(self.aprice(type))

    async def ainstance_type(self, name: str) -> InstanceType:
        return await self._s.backend.ec2.instance_type(name)

    def instance_type(self, name: str) -> InstanceType:
        """vCPUs, memory, GPUs and architectures of an instance type."""
        return self._s.run(self.ainstance_type(name))

    async def avolumes(self) -> Table:
        vols = await self._s.backend.ec2.volumes()
        rows = [{"name": v.name, "id": v.id, "size_gb": v.size_gb, "state": v.state, "az": v.az,
                 "attached_to": v.attached_to} for v in vols]
        return Table(rows, (("name", "NAME"), ("id", "ID"), ("size_gb", "GB"), ("state", "STATE"),
                            ("az", "AZ"), ("attached_to", "ATTACHED TO")))

    def volumes(self) -> Table:
        """EBS volumes: `name`, `id`, `size_gb`, `state`, `az`, `attached_to`."""
        return self._s.run(self.avolumes())

    async def asnapshots(self) -> Table:
        snaps = await self._s.backend.ec2.snapshots()
        rows = [{"name": s.name, "id": s.id, "volume_id": s.volume_id, "size_gb": s.size_gb, "state": s.state}
                for s in snaps]
        return Table(rows, (("name", "NAME"), ("id", "ID"), ("volume_id", "VOLUME"), ("size_gb", "GB"),
                            ("state", "STATE")))

    def snapshots(self) -> Table:
        """Your EBS snapshots: `name`, `id`, `volume_id`, `size_gb`, `state`."""
        return self._s.run(self.asnapshots())

    async def aimages(self) -> Table:
        imgs = await self._s.backend.ec2.images()
        rows = [{"name": i.name, "id": i.id, "state": i.state, "architecture": i.architecture} for i in imgs]
        return Table(rows, (("name", "NAME"), ("id", "ID"), ("state", "STATE"), ("architecture", "ARCH")))

    def images(self) -> Table:
        """Your own AMIs (e.g. made by freezing a box): `name`, `id`, `state`, `architecture`."""
        return self._s.run(self.aimages())

    async def assh_config(self, *, wake: bool = False) -> str:
        from cloudsh.ops import queries

        return (await queries.ssh_config(self._s.backend, wake=wake)).text

    def ssh_config(self, *, wake: bool = False) -> str:
        """An OpenSSH config with one `Host NAME` block per box (for `ssh -F FILE NAME`) that
        finds it across stop/start; with `wake`, connecting to a stopped box starts it."""
        return self._s.run(self.assh_config(wake=wake))
