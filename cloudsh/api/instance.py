"""`Instance`: one box, with the verbs that act on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from cloudsh import models
from cloudsh.api.results import TunnelHandle
from cloudsh.api.session import Session, price_gate
from cloudsh.errors import CloudshError, ConfirmationRefused, HostKeyChanged, SSHError, UsageError
from cloudsh.models import CommandResult, HostInfo
from cloudsh.ops.tunnels import OnTunnelEvent
from cloudsh.services.backend import Backend

T = TypeVar("T")

#: How long a looked-up SSH address is trusted without asking EC2 again.
_HOST_TTL_S = 30.0


class Instance:
    """One EC2 instance. Attributes (`name`, `id`, `type`, `state`, `public_ip`, …) are a
    snapshot; `refresh()` re-reads them."""

    def __init__(self, session: Session, record: models.Instance, *, by_id: bool = False) -> None:
        self._s = session
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
        return self._s.backend

    async def arefresh(self) -> Instance:
        self._host_seen = None  # a start, stop or resize may have moved the box
        self.record = await self._b.ec2.get_instance(self.record.id)
        return self

    def refresh(self) -> Instance:
        """Re-read this instance's state from EC2."""
        return self._s.run(self.arefresh())

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
        return self._s.run(self.arun(command, timeout=timeout))

    async def aput(self, local: str | Path, remote: str) -> None:
        local = Path(local).expanduser()
        if not local.exists():
            raise UsageError(f"{local}: no such file or directory", "check the local path")
        await self._reachable(lambda host: self._b.ssh.put(host, local, remote))

    def put(self, local: str | Path, remote: str) -> None:
        """Copy a local file or directory to the box."""
        self._s.run(self.aput(local, remote))

    async def aget(self, remote: str, local: str | Path) -> None:
        await self._reachable(lambda host: self._b.ssh.get(host, remote, Path(local).expanduser()))

    def get(self, remote: str, local: str | Path) -> None:
        """Copy a file or directory from the box."""
        self._s.run(self.aget(remote, local))

    async def assh(self) -> Any:
        from cloudsh.services.paramiko_client import paramiko_client

        host = await self._host()
        return await asyncio.to_thread(paramiko_client, host, self._b.settings)

    def ssh(self) -> Any:
        """A connected paramiko `SSHClient` for your own code (host key checked against the
        key cloudsh pinned; you close it): `c = box.ssh(); c.exec_command("ls")`."""
        return self._s.run(self.assh())

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
        return self._s.run(self.atunnel(port, remote_port, on_event=on_event))

    def connect(self) -> int:
        """An interactive SSH session in this terminal (OpenSSH `ssh`); returns its exit status."""
        import shutil
        import subprocess

        from cloudsh.services.openssh import openssh_args

        host = self._s.run(self._host())
        if not shutil.which("ssh"):
            raise UsageError("OpenSSH `ssh` is not installed", "use `cloudsh connect NAME` instead")
        return subprocess.call(openssh_args(host, self._b.settings, forwards=[], tty=True))

    async def astart(self, *, wait: bool = True) -> Instance:
        from cloudsh.ops import instances as ops

        await ops.start(self._b, [self.record], wait=wait)
        return await self.arefresh()

    def start(self, *, wait: bool = True) -> Instance:
        """Start the box and (unless `wait=False`) wait until SSH answers."""
        return self._s.run(self.astart(wait=wait))

    async def astop(self, *, wait: bool = True) -> Instance:
        from cloudsh.ops import instances as ops

        await ops.stop(self._b, [self.record], wait=wait, by_id=self._by_id)
        return await self.arefresh()

    def stop(self, *, wait: bool = True) -> Instance:
        """Stop the box (its disk is kept; you pay only for storage)."""
        return self._s.run(self.astop(wait=wait))

    async def aterminate(self, *, discard_results: bool = False) -> None:
        from cloudsh.ops import instances as ops
        from cloudsh.ops.preview import bring_home, terminate_preview

        await bring_home(self._b, [self.record])
        lost = [line for loss in await terminate_preview(self._b, [self.record]) for line in loss.lost()]
        if lost and not discard_results:
            raise ConfirmationRefused(
                f"refusing to terminate {self.record.label}: " + "; ".join(lost),
                "bring them home first (`cloudsh sync`, or wait for the jobs), or pass discard_results=True to lose them",
            )
        await ops.terminate(self._b, [self.record], by_id=self._by_id)
        await self.arefresh()
        self._s.names_at = 0.0

    def terminate(self, *, discard_results: bool = False) -> None:
        """Terminate the box for good, as `cloudsh terminate --yes` does: its jobs' results
        come home first; what cannot (a running job, files still being written) makes it
        refuse with `ConfirmationRefused` naming each, unless `discard_results=True`."""
        self._s.run(self.aterminate(discard_results=discard_results))

    async def aresize(
        self, type: str, *, go_back: bool = False, confirm_price: bool = False, max_per_hour: float | None = None
    ) -> Instance:
        from cloudsh.ops import move as ops

        async def back(_: CloudshError) -> bool:
            return go_back

        await self.arefresh()
        plan = await ops.plan_resize(self._b, self.record, type, by_id=self._by_id)
        await price_gate(self._b, plan.new.name, spot=self.record.market == "spot", az=self.record.az,
                         verb="resize to", confirm_price=confirm_price, max_per_hour=max_per_hour)
        self.record = await ops.resize(self._b, plan, go_back=back)
        return self

    def resize(
        self, type: str, *, go_back: bool = False, confirm_price: bool = False, max_per_hour: float | None = None
    ) -> Instance:
        """Change the instance type ("add a GPU"): a running box is stopped and restarted, the
        NVIDIA driver installed first if its new GPU needs one; a spot box moves to a new box.
        No capacity at the restart: a `CapacityError` leaves it stopped; `go_back=True`
        returns to the old type (see `.type`). A type dearer than the `confirm_above_per_hour`
        setting ($3/h) raises `ConfirmationRefused` first, unless `confirm_price=True` or it is
        within `max_per_hour`."""
        return self._s.run(self.aresize(type, go_back=go_back, confirm_price=confirm_price, max_per_hour=max_per_hour))

    async def arelaunch(
        self, *, type: str | None = None, spot: bool | None = None, confirm_price: bool = False,
        max_per_hour: float | None = None,
    ) -> Instance:
        from cloudsh.ops import move as ops

        await self.arefresh()
        plan = await ops.plan_move(self._b, self.record, "relaunch", new_type=type, spot=spot, by_id=self._by_id)
        await price_gate(self._b, plan.new.name, spot=plan.spot, az=self.record.az, verb="relaunch as",
                         confirm_price=confirm_price, max_per_hour=max_per_hour)
        self.record = await ops.move(self._b, plan)
        self._s.names_at = 0.0
        return self

    def relaunch(
        self, *, type: str | None = None, spot: bool | None = None, confirm_price: bool = False,
        max_per_hour: float | None = None,
    ) -> Instance:
        """A new box from an image of this one's disk, with its name, volumes and jobs (the
        way on for a spot box waiting after an interruption); the old box is terminated
        once the new one answers. `spot=True/False` changes the market, `type` the type;
        the price gate is `resize`'s. This handle then names the new box."""
        return self._s.run(self.arelaunch(type=type, spot=spot, confirm_price=confirm_price, max_per_hour=max_per_hour))

    async def ashow(self) -> dict[str, Any]:
        from cloudsh.ops.show import box_record

        return await box_record(self._b, self.id)

    def show(self) -> dict[str, Any]:
        """Everything about the box, as `cloudsh show NAME --json` has it: type and GPUs,
        state and why, cost, volumes with mount points, SSH rules, jobs, idle stop, tags."""
        return self._s.run(self.ashow())

    # -- images and volumes (ops/images.py, ops/volumes.py) ---------------------------

    async def afreeze(self, image_name: str | None = None, *, no_reboot: bool = False) -> models.Image:
        from cloudsh.ops import images as ops

        plan = await ops.plan_freeze(self._b, self.record, image_name, no_reboot=no_reboot, by_id=self._by_id)
        return await ops.freeze(self._b, plan)

    def freeze(self, image_name: str | None = None, *, no_reboot: bool = False) -> models.Image:
        """Save the box's disk as an image (AMI); `cloud.launch(NAME, image=...)` brings it back.
        Reboots it first for a consistent disk unless `no_reboot=True`."""
        return self._s.run(self.afreeze(image_name, no_reboot=no_reboot))

    async def aattach(self, volume: str, *, mount: str | None = None, format: bool = False) -> str:
        from cloudsh.ops import volumes as ops

        vol = await ops.find_volume(self._b, volume)
        done = await ops.attach(self._b, vol, self.record, mount=mount, fmt=format)
        return done.device or (done.volume.device or "")

    def attach(self, volume: str, *, mount: str | None = None, format: bool = False) -> str:
        """Attach an EBS volume (name or id); `format=True` makes ext4 on a blank one only,
        `mount=DIR` mounts it by UUID with nofail. Returns the device on the box."""
        return self._s.run(self.aattach(volume, mount=mount, format=format))
