"""The Python API for scripts and the IPython prompt.

    from cloudsh import Cloud
    cloud = Cloud()                 # Cloud(sandbox=True), Cloud(profile=..., region=...)
    box = cloud.instance("box")
    box.run("nvidia-smi").stdout
    client = box.ssh()              # a connected paramiko SSHClient

Every method is synchronous for scripts and has an `a`-prefixed async twin
(`await cloud.alaunch(...)`) for code that already runs an event loop. The sync methods
run on one private event loop in a background thread, so they also work inside
IPython or Jupyter (which run loops of their own) and reuse SSH connections across calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from cloudsh import models
from cloudsh.config import Settings
from cloudsh.errors import InvalidState
from cloudsh.models import CommandResult, HostInfo, InstanceType, Price
from cloudsh.services.backend import Backend

T = TypeVar("T")


class _Loop:
    """One asyncio loop in a daemon thread, for the sync API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cloudsh-api", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("sync cloudsh API called from its own loop; use the async twin")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except KeyboardInterrupt:
            fut.cancel()
            raise


class Cloud:
    """One cloud account and region (or the local sandbox)."""

    def __init__(
        self,
        *,
        sandbox: bool | None = None,
        profile: str | None = None,
        region: str | None = None,
        settings: Settings | None = None,
        backend: Backend | None = None,
    ) -> None:
        self._backend = backend or Backend.create(
            settings or Settings.load(), sandbox=sandbox, profile=profile, region=region
        )
        self._loop: _Loop | None = None

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

    def __repr__(self) -> str:
        return f"<Cloud {self.label}>"

    def close(self) -> None:
        """Close pooled SSH connections."""
        if self._loop is not None:
            self._run(self._backend.close())

    # -- instances --------------------------------------------------------------

    async def ainstances(self, *, all: bool = False) -> list[Instance]:
        found = await self._backend.ec2.list_instances(include_terminated=all)
        return [Instance(self, i) for i in found]

    def instances(self, *, all: bool = False) -> InstanceList:
        """Instances (live ones; `all=True` adds terminated)."""
        return InstanceList(self._run(self.ainstances(all=all)))

    async def ainstance(self, name: str) -> Instance:
        return Instance(self, await self._backend.ec2.find(name))

    def instance(self, name: str) -> Instance:
        """One instance by Name tag or id (`NotFound`/`Ambiguous` otherwise)."""
        return self._run(self.ainstance(name))

    def __getitem__(self, name: str) -> Instance:
        return self.instance(name)

    async def alaunch(
        self,
        name: str,
        type: str | None = None,
        *,
        spot: bool = False,
        disk: int | None = None,
        image: str | None = None,
        wait: bool = True,
    ) -> Instance:
        from cloudsh.ops import instances as ops

        plan = await ops.plan_launch(self._backend, name, instance_type=type, spot=spot, disk_gb=disk, image=image)
        return Instance(self, await ops.launch(self._backend, plan, wait=wait))

    def launch(
        self,
        name: str,
        type: str | None = None,
        *,
        spot: bool = False,
        disk: int | None = None,
        image: str | None = None,
        wait: bool = True,
    ) -> Instance:
        """Launch a box called `name` and (unless `wait=False`) wait until SSH answers."""
        return self._run(self.alaunch(name, type, spot=spot, disk=disk, image=image, wait=wait))

    # -- facts ------------------------------------------------------------------

    def instance_type(self, name: str) -> InstanceType:
        """vCPUs, memory, GPUs and architectures of an instance type."""
        return self._run(self._backend.ec2.instance_type(name))

    def prices(self, types: Sequence[str]) -> dict[str, Price]:
        """On-demand and current spot $/h for the given types."""
        return self._run(self._backend.pricing.prices(list(types), strict=False))


class InstanceList(list["Instance"]):
    """A list of instances that prints as a table."""

    def __repr__(self) -> str:
        from cloudsh.commands.views import table

        if not self:
            return "(no instances)"
        rows = [{"name": i.name or "-", "id": i.id, "type": i.type, "state": i.state, "market": i.market} for i in self]
        return table(rows, [("name", "NAME"), ("id", "ID"), ("type", "TYPE"), ("state", "STATE"), ("market", "MARKET")])


class Instance:
    """One EC2 instance. Attributes are a snapshot; `refresh()` re-reads them."""

    def __init__(self, cloud: Cloud, record: models.Instance) -> None:
        self._cloud = cloud
        self.record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(models.Instance.__dataclass_fields__))

    def __repr__(self) -> str:
        r = self.record
        return f"<Instance {r.label} {r.id} {r.type} {r.state}>"

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
        self.record = await self._b.ec2.get_instance(self.record.id)
        return self

    def refresh(self) -> Instance:
        """Re-read this instance's state from EC2."""
        return self._run(self.arefresh())

    async def _host(self) -> HostInfo:
        from cloudsh.ops.instances import host_for

        await self.arefresh()
        if self.record.state != "running":
            raise InvalidState(
                f"{self.record.label} is {self.record.state}, not running",
                f"start it with `{self.record.label}.start()`",
            )
        host = await host_for(self._b, self.record)
        await self._b.ssh.ensure_pinned(host)
        return host

    async def arun(self, command: str, *, timeout: float | None = None) -> CommandResult:
        return await self._b.ssh.run(await self._host(), command, timeout=timeout)

    def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        """Run a shell command on the box; `.stdout`, `.stderr`, `.exit_status`."""
        return self._run(self.arun(command, timeout=timeout))

    async def aput(self, local: str | Path, remote: str) -> None:
        await self._b.ssh.put(await self._host(), Path(local), remote)

    def put(self, local: str | Path, remote: str) -> None:
        """Copy a local file or directory to the box."""
        self._run(self.aput(local, remote))

    async def aget(self, remote: str, local: str | Path) -> None:
        await self._b.ssh.get(await self._host(), remote, Path(local))

    def get(self, remote: str, local: str | Path) -> None:
        """Copy a file or directory from the box."""
        self._run(self.aget(remote, local))

    def ssh(self) -> Any:
        """A connected paramiko `SSHClient` (host key verified against cloudsh's pinned key)."""
        from cloudsh.services.paramiko_client import paramiko_client

        host = self._run(self._host())
        return paramiko_client(host, self._b.settings)

    async def astart(self, *, wait: bool = True) -> Instance:
        from cloudsh.ops import instances as ops

        await ops.start(self._b, [self.record], wait=wait)
        return await self.arefresh()

    def start(self, *, wait: bool = True) -> Instance:
        """Start the box and (unless `wait=False`) wait until SSH answers."""
        return self._run(self.astart(wait=wait))

    async def astop(self, *, wait: bool = True) -> Instance:
        from cloudsh.ops import instances as ops

        await ops.stop(self._b, [self.record], wait=wait)
        return await self.arefresh()

    def stop(self, *, wait: bool = True) -> Instance:
        """Stop the box (its disk is kept)."""
        return self._run(self.astop(wait=wait))

    async def aterminate(self) -> None:
        from cloudsh.ops import instances as ops

        await ops.terminate(self._b, [self.record])
        await self.arefresh()

    def terminate(self) -> None:
        """Terminate the box for good (no confirmation: this is the API)."""
        self._run(self.aterminate())

    async def aresize(self, type: str) -> Instance:
        from cloudsh.ops import instances as ops

        await self.arefresh()
        plan = await ops.plan_resize(self._b, self.record, type)
        self.record = await ops.resize(self._b, plan)
        return self

    def resize(self, type: str) -> Instance:
        """Change the instance type (stops and restarts a running box)."""
        return self._run(self.aresize(type))
