"""The Python API for scripts and the IPython prompt.

    from cloudsh import Cloud
    cloud = Cloud()                 # Cloud(sandbox=True), Cloud(profile=..., region=...)
    box = cloud.launch("box", "g5.xlarge", spot=True)
    box.run("nvidia-smi").stdout
    client = box.ssh()              # a connected paramiko SSHClient
    with box.tunnel(8888) as t:     # t.url -> http://localhost:8888/
        ...

The verbs of the command language are methods: on `Cloud` taking a NAME (as on the command
line) and on `Instance` acting on that box. Every method is synchronous for scripts and has
an `a`-prefixed async twin (`await cloud.alaunch(...)`) for code that runs its own event
loop. The sync methods run on one private event loop in a background thread, so they work
in IPython or Jupyter and reuse SSH connections. Errors are `cloudsh.errors.CloudshError`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Cloud", "Instance", "InstanceList", "Table", "TunnelHandle"]

from cloudsh import models
from cloudsh.api_results import InstanceList, Table, TunnelHandle
from cloudsh.config import Settings
from cloudsh.errors import AWSError, CloudshError, HostKeyChanged, SSHError, UsageError
from cloudsh.models import CommandResult, HostInfo, InstanceType, Price
from cloudsh.ops.tunnels import OnTunnelEvent
from cloudsh.root import connect
from cloudsh.services.backend import Backend

T = TypeVar("T")

#: How long a looked-up SSH address is trusted without asking EC2 again.
_HOST_TTL_S = 30.0

#: How long instance names stay fresh for IPython's `cloud["<TAB>` completion.
NAMES_TTL_S = 15.0


def _translate(exc: BaseException) -> BaseException:
    """A library exception that slipped past the service layer, as a CloudshError."""
    if isinstance(exc, CloudshError | KeyboardInterrupt | asyncio.CancelledError):
        return exc
    root = type(exc).__module__.split(".", 1)[0]
    if root in ("botocore", "boto3"):
        return AWSError(f"AWS request failed: {exc}", "check your credentials and region")
    if root in ("asyncssh", "paramiko"):
        return SSHError(f"SSH failed: {exc}", "check the box with `cloud.instances()` and try again")
    return exc


class _Loop:
    """One asyncio loop in a daemon thread, for the sync API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cloudsh-api", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise UsageError("a sync cloudsh method was called from the API's own loop", "use its async twin")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise
        except Exception as exc:
            new = _translate(exc)
            if new is exc:
                raise
            raise new from None

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


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
            self._backend = backend or connect(
                settings or Settings.load(), sandbox=sandbox, profile=profile, region=region
            )
        except Exception as exc:
            new = _translate(exc)
            if new is exc:
                raise
            raise new from None
        self._loop: _Loop | None = None
        self._names: tuple[str, ...] = ()
        self._names_at = 0.0

    # -- plumbing ---------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self._backend

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = _Loop()
        return self._loop.run(coro)

    @property
    def label(self) -> str:
        """`SANDBOX` or `profile/region`."""
        return self._backend.label

    @property
    def sandbox(self) -> bool:
        """True on the local sandbox cloud."""
        return self._backend.sandbox

    @property
    def region(self) -> str:
        return self._backend.target.region

    def __repr__(self) -> str:
        return f"<Cloud {self.label}>"

    def close(self) -> None:
        """Close pooled SSH connections and the API's background loop."""
        if self._loop is not None:
            self._run(self._aclose())
            self._loop.stop()
            self._loop = None

    async def _aclose(self) -> None:
        # Kept tunnels are tasks on this loop: end them before the connections they use.
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self._backend.close()

    def __enter__(self) -> Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _remember(self, insts: Sequence[models.Instance]) -> None:
        self._names = tuple(dict.fromkeys([i.name for i in insts if i.name] + [i.id for i in insts]))
        self._names_at = time.monotonic()

    # -- instances --------------------------------------------------------------

    async def ainstances(self, *, all: bool = False) -> InstanceList[Instance]:
        found = await self._backend.ec2.list_instances(include_terminated=all)
        if not all:
            self._remember(found)
        return InstanceList(Instance(self, i) for i in found)

    def instances(self, *, all: bool = False) -> InstanceList[Instance]:
        """Live instances as a list that prints as a table (`all=True` adds terminated ones)."""
        return self._run(self.ainstances(all=all))

    async def ainstance(self, name: str) -> Instance:
        found = await self._backend.ec2.find(name)
        return Instance(self, found, by_id=found.id == name)

    def instance(self, name: str) -> Instance:
        """One instance by Name tag or id; `NotFound`/`Ambiguous` (CloudshErrors) otherwise.
        A box cloudsh did not launch stops, resizes or terminates only if looked up by its id."""
        return self._run(self.ainstance(name))

    def __getitem__(self, name: str) -> Instance:
        """`cloud["box"]`: the same as `cloud.instance("box")`."""
        return self.instance(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._ipython_key_completions_()

    def _ipython_key_completions_(self) -> list[str]:
        """Instance names and ids for `cloud["bo<TAB>`; re-listed at most every 15 s."""
        if time.monotonic() - self._names_at > NAMES_TTL_S:
            # Completion offers what it knew; the lookup itself will report the error.
            with contextlib.suppress(CloudshError):
                self._run(self.ainstances())
        return list(self._names)

    async def alaunch(
        self,
        name: str,
        type: str | None = None,
        *,
        spot: bool = False,
        disk: int | None = None,
        image: str | None = None,
        wait: bool = True, az: str | None = None, subnet: str | None = None,
    ) -> Instance:
        from cloudsh.ops import instances as ops

        plan = await ops.plan_launch(self._backend, name, instance_type=type, spot=spot, disk_gb=disk, image=image, az=az, subnet=subnet)
        inst = Instance(self, await ops.launch(self._backend, plan, wait=wait))
        self._names_at = 0.0
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
    ) -> Instance:
        """Launch a box called `name` and (unless `wait=False`) wait until SSH answers.

        `type` defaults to your configured type (t3.medium), `disk` the root volume in GB
        (default 60 or the image's size, never below it), `image` an AMI id or name (default:
        current Ubuntu LTS); `spot=True`: a persistent spot request, stopped on interruption.
        `az`/`subnet` pin where it goes (default: each AZ that offers it until one has capacity).
        """
        return self._run(self.alaunch(name, type, spot=spot, disk=disk, image=image, wait=wait, az=az, subnet=subnet))

    # Verbs by NAME, as on the command line; each is the Instance method of the same name.

    async def astart(self, name: str, *, wait: bool = True) -> Instance:
        return await (await self.ainstance(name)).astart(wait=wait)

    def start(self, name: str, *, wait: bool = True) -> Instance:
        """Start a stopped box and (unless `wait=False`) wait until SSH answers."""
        return self._run(self.astart(name, wait=wait))

    async def astop(self, name: str, *, wait: bool = True) -> Instance:
        return await (await self.ainstance(name)).astop(wait=wait)

    def stop(self, name: str, *, wait: bool = True) -> Instance:
        """Stop a box (its disk is kept; you pay only for storage)."""
        return self._run(self.astop(name, wait=wait))

    async def aterminate(self, name: str) -> None:
        await (await self.ainstance(name)).aterminate()

    def terminate(self, name: str) -> None:
        """Terminate a box for good. No confirmation: this is the API."""
        self._run(self.aterminate(name))

    async def aresize(self, name: str, type: str, *, go_back: bool = False) -> Instance:
        return await (await self.ainstance(name)).aresize(type, go_back=go_back)

    def resize(self, name: str, type: str, *, go_back: bool = False) -> Instance:
        """Change a box's type ("add a GPU"); see `Instance.resize`."""
        return self._run(self.aresize(name, type, go_back=go_back))

    async def arun(self, name: str, command: str, *, timeout: float | None = None) -> CommandResult:
        return await (await self.ainstance(name)).arun(command, timeout=timeout)

    def run(self, name: str, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run a shell command on a box: a result with `.stdout`, `.stderr`, `.exit_status`."""
        return self._run(self.arun(name, command, timeout=timeout))

    async def aput(self, name: str, local: str | Path, remote: str) -> None:
        await (await self.ainstance(name)).aput(local, remote)

    def put(self, name: str, local: str | Path, remote: str) -> None:
        """Copy a local file or directory to a box."""
        self._run(self.aput(name, local, remote))

    async def aget(self, name: str, remote: str, local: str | Path) -> None:
        await (await self.ainstance(name)).aget(remote, local)

    def get(self, name: str, remote: str, local: str | Path) -> None:
        """Copy a file or directory from a box."""
        self._run(self.aget(name, remote, local))

    async def atunnel(
        self, name: str, port: int, remote_port: int | None = None, *, on_event: OnTunnelEvent | None = None
    ) -> TunnelHandle:
        return await (await self.ainstance(name)).atunnel(port, remote_port, on_event=on_event)

    def tunnel(
        self, name: str, port: int, remote_port: int | None = None, *, on_event: OnTunnelEvent | None = None
    ) -> TunnelHandle:
        """Forward localhost:`port` to `remote_port` (default: the same) on a box; see `Instance.tunnel`."""
        return self._run(self.atunnel(name, port, remote_port, on_event=on_event))

    # -- the cloud --------------------------------------------------------------

    async def aprices(self, *, gpu: bool = False, family: str | Sequence[str] | None = None) -> Table:
        from cloudsh.ops import queries

        families = [family] if isinstance(family, str) else list(family or ())
        found = await queries.prices(self._backend, families, gpu_only=gpu)
        cols = (("type", "TYPE"), ("vcpus", "VCPUS"), ("memory_gib", "MEM GIB"), ("gpus", "GPUS"),
                ("on_demand", "ON-DEMAND $/H"), ("spot", "SPOT $/H"), ("spot_saving", "SAVING"))
        return Table(found.rows, cols, note=found.note)

    def prices(self, *, gpu: bool = False, family: str | Sequence[str] | None = None) -> Table:
        """Instance types with vCPUs, memory, GPUs, on-demand and current spot $/h. `gpu=True`
        keeps GPU types only; `family="g5"` (or a list) picks families. Rows are dicts
        (`type`, `gpus`, `on_demand`, `spot`, …, `note`: why a price is None)."""
        return self._run(self.aprices(gpu=gpu, family=family))

    async def aprice(self, type: str) -> Price:
        from cloudsh.ops import queries

        return await queries.price(self._backend, type)

    def price(self, type: str) -> Price:
        """On-demand and current spot $/h of one instance type."""
        return self._run(self.aprice(type))

    async def ainstance_type(self, name: str) -> InstanceType:
        return await self._backend.ec2.instance_type(name)

    def instance_type(self, name: str) -> InstanceType:
        """vCPUs, memory, GPUs and architectures of an instance type."""
        return self._run(self.ainstance_type(name))

    async def avolumes(self) -> Table:
        vols = await self._backend.ec2.volumes()
        rows = [{"name": v.name, "id": v.id, "size_gb": v.size_gb, "state": v.state, "az": v.az,
                 "attached_to": v.attached_to} for v in vols]
        return Table(rows, (("name", "NAME"), ("id", "ID"), ("size_gb", "GB"), ("state", "STATE"),
                            ("az", "AZ"), ("attached_to", "ATTACHED TO")))

    def volumes(self) -> Table:
        """EBS volumes: `name`, `id`, `size_gb`, `state`, `az`, `attached_to`."""
        return self._run(self.avolumes())

    async def asnapshots(self) -> Table:
        snaps = await self._backend.ec2.snapshots()
        rows = [{"name": s.name, "id": s.id, "volume_id": s.volume_id, "size_gb": s.size_gb, "state": s.state}
                for s in snaps]
        return Table(rows, (("name", "NAME"), ("id", "ID"), ("volume_id", "VOLUME"), ("size_gb", "GB"),
                            ("state", "STATE")))

    def snapshots(self) -> Table:
        """Your EBS snapshots: `name`, `id`, `volume_id`, `size_gb`, `state`."""
        return self._run(self.asnapshots())

    async def aimages(self) -> Table:
        imgs = await self._backend.ec2.images()
        rows = [{"name": i.name, "id": i.id, "state": i.state, "architecture": i.architecture} for i in imgs]
        return Table(rows, (("name", "NAME"), ("id", "ID"), ("state", "STATE"), ("architecture", "ARCH")))

    def images(self) -> Table:
        """Your own AMIs (e.g. made by freezing a box): `name`, `id`, `state`, `architecture`."""
        return self._run(self.aimages())

    async def assh_config(self, *, wake: bool = False) -> str:
        from cloudsh.ops import queries

        return (await queries.ssh_config(self._backend, wake=wake)).text

    def ssh_config(self, *, wake: bool = False) -> str:
        """An OpenSSH config with one `Host NAME` block per box (for `ssh -F FILE NAME`) that
        finds it across stop/start; with `wake`, connecting to a stopped box starts it."""
        return self._run(self.assh_config(wake=wake))


class Instance:
    """One EC2 instance. Attributes (`name`, `id`, `type`, `state`, `public_ip`, …) are a
    snapshot; `refresh()` re-reads them."""

    def __init__(self, cloud: Cloud, record: models.Instance, *, by_id: bool = False) -> None:
        self._cloud = cloud
        self.record = record
        # Looked up by its id: what `ops.owners` asks before acting on a box cloudsh did not launch.
        self._by_id: tuple[str, ...] = (record.id,) if by_id else ()
        self._host_seen: tuple[HostInfo, float] | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.record, name)

    def __dir__(self) -> list[str]:
        props = {"label", "managed", "owner"}
        return sorted(set(super().__dir__()) | set(models.Instance.__dataclass_fields__) | props)

    def __repr__(self) -> str:
        r = self.record
        ip = f" {r.public_ip}" if r.public_ip else ""
        whose = "" if r.managed else f" (not cloudsh's: {r.owner or 'owner unknown'})"
        return f"<Instance {r.label} {r.id} {r.type} {r.market} {r.status()}{ip}{whose}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instance) and other.record.id == self.record.id

    def __hash__(self) -> int:
        return hash(self.record.id)

    @property
    def _b(self) -> Backend:
        return self._cloud.backend

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._cloud._run(coro)

    async def arefresh(self) -> Instance:
        self._host_seen = None  # a start, stop or resize may have moved the box
        self.record = await self._b.ec2.get_instance(self.record.id)
        return self

    def refresh(self) -> Instance:
        """Re-read this instance's state from EC2."""
        return self._run(self.arefresh())

    async def _host(self) -> HostInfo:
        """Where to reach the box. A host checked in the last 30 s is reused without asking
        EC2 again (a DescribeInstances per `run` would triple its cost on a pooled
        connection); `_reachable` drops it as soon as a connection to it fails."""
        from cloudsh.ops.reach import ssh_host

        if self._host_seen is not None and time.monotonic() - self._host_seen[1] < _HOST_TTL_S:
            return self._host_seen[0]
        await self.arefresh()
        host = await ssh_host(
            self._b, self.record, stopped_hint="start it with `.start()`", other_hint="launch another one"
        )
        self._host_seen = (host, time.monotonic())
        return host

    async def _reachable(self, op: Callable[[HostInfo], Awaitable[T]]) -> T:
        """Run `op` (once: it may not be safe to repeat) against the box. If a remembered
        host stopped answering, look the box up again so the error says why (e.g. stopped)."""
        remembered = self._host_seen is not None
        try:
            return await op(await self._host())
        except SSHError as exc:
            self._host_seen = None
            if remembered and not isinstance(exc, HostKeyChanged):
                await self._host()  # raises InvalidState if the box is no longer running
            raise

    async def arun(self, command: str, *, timeout: float | None = None) -> CommandResult:
        return await self._reachable(lambda host: self._b.ssh.run(host, command, timeout=timeout))

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run a shell command on the box: a result with `.stdout`, `.stderr`, `.exit_status`."""
        return self._run(self.arun(command, timeout=timeout))

    async def aput(self, local: str | Path, remote: str) -> None:
        local = Path(local).expanduser()
        if not local.exists():
            raise UsageError(f"{local}: no such file or directory", "check the local path")
        await self._reachable(lambda host: self._b.ssh.put(host, local, remote))

    def put(self, local: str | Path, remote: str) -> None:
        """Copy a local file or directory to the box."""
        self._run(self.aput(local, remote))

    async def aget(self, remote: str, local: str | Path) -> None:
        await self._reachable(lambda host: self._b.ssh.get(host, remote, Path(local).expanduser()))

    def get(self, remote: str, local: str | Path) -> None:
        """Copy a file or directory from the box."""
        self._run(self.aget(remote, local))

    async def assh(self) -> Any:
        from cloudsh.services.paramiko_client import paramiko_client

        host = await self._host()
        return await asyncio.to_thread(paramiko_client, host, self._b.settings)

    def ssh(self) -> Any:
        """A connected paramiko `SSHClient` for your own code (host key checked against the
        key cloudsh pinned; you close it): `c = box.ssh(); c.exec_command("ls")`."""
        return self._run(self.assh())

    async def atunnel(
        self, port: int, remote_port: int | None = None, *, on_event: OnTunnelEvent | None = None
    ) -> TunnelHandle:
        from cloudsh.ops.tunnels import TunnelKeeper

        keeper = TunnelKeeper(self._b, self.record.id, [(port, remote_port or port)])
        return await TunnelHandle(keeper, on_event)._start()

    def tunnel(
        self, port: int, remote_port: int | None = None, *, on_event: OnTunnelEvent | None = None
    ) -> TunnelHandle:
        """Forward localhost:`port` to `remote_port` (default: the same) on the box until
        `.close()` (port 0 picks a free local port). `with box.tunnel(8888) as t: t.url`.

        The forward is kept: if the box stops and starts again, it reconnects on the same
        local port. `on_event` is called (on the API's loop thread) with each
        `cloudsh.ops.tunnels` event: opened, lost, reconnecting, closed."""
        return self._run(self.atunnel(port, remote_port, on_event=on_event))

    def connect(self) -> int:
        """An interactive SSH session in this terminal (OpenSSH `ssh`); returns its exit status."""
        import shutil
        import subprocess

        from cloudsh.services.openssh import openssh_args

        host = self._run(self._host())
        if not shutil.which("ssh"):
            raise UsageError("OpenSSH `ssh` is not installed", "use `cloudsh connect NAME` instead")
        return subprocess.call(openssh_args(host, self._b.settings, forwards=[], tty=True))

    async def astart(self, *, wait: bool = True) -> Instance:
        from cloudsh.ops import instances as ops

        await ops.start(self._b, [self.record], wait=wait)
        return await self.arefresh()

    def start(self, *, wait: bool = True) -> Instance:
        """Start the box and (unless `wait=False`) wait until SSH answers."""
        return self._run(self.astart(wait=wait))

    async def astop(self, *, wait: bool = True) -> Instance:
        from cloudsh.ops import instances as ops

        await ops.stop(self._b, [self.record], wait=wait, by_id=self._by_id)
        return await self.arefresh()

    def stop(self, *, wait: bool = True) -> Instance:
        """Stop the box (its disk is kept; you pay only for storage)."""
        return self._run(self.astop(wait=wait))

    async def aterminate(self) -> None:
        from cloudsh.ops import instances as ops

        await ops.terminate(self._b, [self.record], by_id=self._by_id)
        await self.arefresh()
        self._cloud._names_at = 0.0

    def terminate(self) -> None:
        """Terminate the box for good. No confirmation: this is the API."""
        self._run(self.aterminate())

    async def aresize(self, type: str, *, go_back: bool = False) -> Instance:
        from cloudsh.ops import move as ops

        async def back(_: CloudshError) -> bool:
            return go_back

        await self.arefresh()
        plan = await ops.plan_resize(self._b, self.record, type, by_id=self._by_id)
        self.record = await ops.resize(self._b, plan, go_back=back)
        return self

    def resize(self, type: str, *, go_back: bool = False) -> Instance:
        """Change the instance type ("add a GPU"): a running box is stopped and restarted, the
        NVIDIA driver installed first if its new GPU needs one; a spot box moves to a new box.
        No capacity at the restart: a `CapacityError` leaves it stopped; `go_back=True`
        returns to the old type (see `.type`)."""
        return self._run(self.aresize(type, go_back=go_back))

    # -- images and volumes (ops/images.py, ops/volumes.py) ---------------------------

    async def afreeze(self, image_name: str | None = None, *, no_reboot: bool = False) -> models.Image:
        from cloudsh.ops import images as ops

        plan = await ops.plan_freeze(self._b, self.record, image_name, no_reboot=no_reboot, by_id=self._by_id)
        return await ops.freeze(self._b, plan)

    def freeze(self, image_name: str | None = None, *, no_reboot: bool = False) -> models.Image:
        """Save the box's disk as an image (AMI); `cloud.launch(NAME, image=...)` brings it back.
        Reboots it first for a consistent disk unless `no_reboot=True`."""
        return self._run(self.afreeze(image_name, no_reboot=no_reboot))

    async def aattach(self, volume: str, *, mount: str | None = None, format: bool = False) -> str:
        from cloudsh.ops import volumes as ops

        vol = await ops.find_volume(self._b, volume)
        done = await ops.attach(self._b, vol, self.record, mount=mount, fmt=format)
        return done.device or (done.volume.device or "")

    def attach(self, volume: str, *, mount: str | None = None, format: bool = False) -> str:
        """Attach an EBS volume (name or id); `format=True` makes ext4 on a blank one only,
        `mount=DIR` mounts it by UUID with nofail. Returns the device on the box."""
        return self._run(self.aattach(volume, mount=mount, format=format))
