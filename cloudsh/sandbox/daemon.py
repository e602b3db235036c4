"""The sandbox daemon: moto's EC2 server plus one SSH server per running instance.

Run as `python -m cloudsh.sandbox.daemon --dir DIR --port PORT [--boot-s S] [--consistency-s S]`, normally by
`cloudsh.sandbox.control.sandbox_up`. It serves moto in-process (so it can watch moto's
EC2 backend directly), follows each instance's state, and publishes what clients need in
`DIR/state.json`. SIGTERM/SIGINT, or deleting DIR, stop it and everything it started.
It serves every region of `regions.py`, and its cloud outlives it (`persist.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudsh.sandbox import persist, regions, spot
from cloudsh.sandbox.capacity import CapacityLedger
from cloudsh.sandbox.state import REGION, SandboxInstance, SandboxState, write_state
from cloudsh.sandbox.timing import Timing

log = logging.getLogger("cloudsh.sandbox.daemon")

AMIS_PATH = Path(__file__).with_name("ubuntu_amis.json")
POLL_S = 0.1
RETRY_S = 5.0
NO_ISOLATION = "commands on sandbox boxes run without isolation (install bubblewrap)"

#: SSM public parameters Canonical publishes for the current Ubuntu LTS, by architecture.
SSM_UBUNTU = "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"
#: ... and AWS for the current Deep Learning Base OSS NVIDIA Driver GPU AMI (Ubuntu 24.04)
#: ("DLAMI release notes": x86_64 and arm64).
SSM_DLAMI = "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"


def _configure_moto_env() -> None:
    """moto reads these at import time, so they are set before anything imports moto."""
    os.environ["MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION"] = "true"
    os.environ["MOTO_ENABLE_KEYPAIR_VALIDATION"] = "true"
    os.environ["MOTO_ENABLE_AMI_VALIDATION"] = "true"
    os.environ["MOTO_AMIS_PATH"] = str(AMIS_PATH)
    # The daemon must never reach real AWS, whatever the caller's environment says.
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)


class Daemon:
    def __init__(
        self, sandbox_dir: Path, port: int, boot_s: float, consistency_s: float = 0.0, console_s: float = 0.0
    ) -> None:
        self.dir = sandbox_dir
        self.port = port
        self.boot_s = boot_s
        self.consistency_s = consistency_s
        self.console_s = console_s
        self.isolation = "none"
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.boxes: dict[str, Any] = {}  # instance id -> sshd.Box
        self.booting: dict[str, asyncio.Task[None]] = {}
        self.ports: dict[str, int] = {}  # instance id -> last SSH port, reused on restart
        self.states: dict[str, str] = {}
        self.failed_at: dict[str, float] = {}  # instance id -> when its SSH server last failed
        # Bumped (from moto's request threads) by every stop/reboot/terminate call, so a
        # stop-and-start faster than one poll still restarts the box with its new type.
        self.generation: dict[str, int] = {}
        self.booted_generation: dict[str, int] = {}
        self._generation_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.host_keys: dict[str, str] = {}  # read by the WSGI thread (GetConsoleOutput)
        self.ssh_up_at: dict[str, float] = {}  # instance id -> when its SSH server came up (monotonic)
        self._published: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.app: Any = None  # the SandboxEc2App, for what moto drops (spot behaviour)
        self.storage: Any = None  # storage.StorageLayer: which boxes CreateImage is copying
        self.imds: Any = None  # imds.Imds: instance metadata and spot interruptions
        self.firewall: Any = None  # firewall.Firewall: who may reach the boxes' SSH servers
        #: How many more instances may start per type and AZ; `subscribe` to hear of a raise.
        self.capacity = CapacityLedger()
        # EC2 restarts interrupted spot boxes itself once capacity for them returns.
        self.capacity.subscribe(self._capacity_raised)
        self.quotas: dict[str, tuple[str, float]] = {}  # quota code -> (name, vCPUs), set with moto
        self.no_default_vpc = False  # CLOUDSH_SANDBOX_NO_DEFAULT_VPC (vpcs.py)
        self.timing = Timing()  # CLOUDSH_SANDBOX_TIMING (timing.py)
        self.regions: Any = None  # regions.RegionLayer: each request's region
        self._changed_at = 0.0  # when a request last changed the cloud, 0 once saved (persist.py)
        self._unsaved_since = 0.0  # the first change not saved yet

    # -- moto -----------------------------------------------------------------------------

    def ec2_backend(self, region: str | None = None) -> Any:
        """moto's EC2 backend of `region`, by default that of the request being served."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        return ec2_backends[DEFAULT_ACCOUNT_ID][region or regions.current()]

    def ec2_backends(self) -> list[Any]:
        """The EC2 backend of every region used so far."""
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        return list(ec2_backends[DEFAULT_ACCOUNT_ID].values())

    def start_moto(self) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from cloudsh.sandbox import addresses, fastser, vpcs, wsgi
        from cloudsh.sandbox.capacity import CapacityLayer
        from cloudsh.sandbox.consistency import ConsistencyLayer
        from cloudsh.sandbox.httpd import WsgiServer
        from cloudsh.sandbox.instance_connect import InstanceConnectLayer
        from cloudsh.sandbox.moto_app import SandboxEc2App
        from cloudsh.sandbox.storage import StorageLayer
        from cloudsh.sandbox.timing import TimingLayer
        from cloudsh.sandbox.vcpu_quota import QuotaLayer

        addresses.install()
        fastser.install()
        self.storage = StorageLayer(
            wsgi.one_at_a_time(DomainDispatcherApplication(create_backend_app), regions.current),
            self.dir, self.ec2_backend, self._lifecycle,
        )
        self.quotas = self.storage.quotas
        timed = TimingLayer(self.storage, self.timing, self.ec2_backend)
        limited = QuotaLayer(CapacityLayer(timed, self.capacity, self.ec2_backend), self.quotas, self.ec2_backend)
        app = SandboxEc2App(
            vpcs.wrap(limited, self.no_default_vpc, self.ec2_backend),
            self.ec2_backend,
            self.console_host_key,
            self._lifecycle,
        )
        self.app = app
        # Bound here, so a port taken is one clear error.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self.port = sock.getsockname()[1]
        connect = InstanceConnectLayer(ConsistencyLayer(app, self.consistency_s), self.ec2_backend, self._push_key)
        layer = regions.RegionLayer(connect, self._publish_images, self._changed)
        self.regions = layer
        self._server = WsgiServer(sock, layer)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        layer.prepare(regions.DEFAULT)

    def _push_key(self, iid: str, user: str, key_line: str, seconds: float) -> None:
        box = self.boxes.get(iid)
        if box is not None:
            box.push_key(user, key_line, seconds)

    def console_host_key(self, iid: str) -> str | None:
        """The box's host key once cloud-init has printed it to the console: `console_s`
        after its SSH server came up (before that, GetConsoleOutput has no output)."""
        up_at = self.ssh_up_at.get(iid)
        if up_at is None or time.monotonic() - up_at < self.console_s:
            return None
        return self.host_keys.get(iid)

    def _lifecycle(self, action: str, instance_ids: list[str]) -> None:
        if action in ("StopInstances", "RebootInstances", "TerminateInstances"):
            with self._generation_lock:
                for iid in instance_ids:
                    self.generation[iid] = self.generation.get(iid, 0) + 1
            # The box's SSH server goes down before EC2's answer does, as a real shutdown
            # would: a stop, a type change and a start can all happen between two polls, and
            # a client must never reach the old server (old type, old tools) after that.
            loop = self._loop
            if loop is None or not loop.is_running():
                return
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(self._halt(instance_ids))
            else:
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    asyncio.run_coroutine_threadsafe(self._halt(instance_ids), loop).result(timeout=10)

    async def _halt(self, instance_ids: list[str]) -> None:
        for iid in instance_ids:
            task = self.booting.pop(iid, None)
            if task is not None:
                task.cancel()
            box = self.boxes.get(iid)
            if box is not None and box.running:
                await box.stop()
                self.host_keys.pop(iid, None)
        self._publish()

    def _publish_images(self, region: str) -> None:
        """Build a region's backend (and load the AMIs) before its first request; give the
        published images their real root snapshot and name them where EC2 does (SSM)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID

        from cloudsh.sandbox.images import publish_sizes

        publish_sizes(self.ec2_backend(region), DEFAULT_ACCOUNT_ID)
        self._publish_ssm_parameters(region)

    def _changed(self) -> None:
        self._changed_at = time.monotonic()
        self._unsaved_since = self._unsaved_since or self._changed_at

    async def _save(self, *, now: bool = False) -> None:
        """Write the cloud in the first quiet moment after a change (persist.py), or `now`."""
        changed_at, waited = self._changed_at, time.monotonic() - self._unsaved_since
        last = max(changed_at, self.regions.last_request if self.regions is not None else 0.0)
        quiet = time.monotonic() - last >= persist.SAVE_DELAY_S or waited >= persist.SAVE_MAX_DELAY_S
        if not changed_at or not (now or quiet):
            return
        tables = {
            "ports": dict(self.ports),
            "spot_behaviour": dict(self.app.spot_behaviour),
            # The account's limits and this machine's address outlive a restart, as on EC2.
            "capacity": self.capacity.limits(),
            "quotas": dict(self.quotas),
            "address": self.firewall.address if self.firewall is not None else None,
        }
        try:
            await asyncio.to_thread(persist.save, self.dir, tables)
        except RuntimeError:  # a request changed the cloud while it was read: next tick
            return
        except Exception:  # noqa: BLE001  (logged; the cloud serves on, and the next change tries again)
            log.exception("could not save the cloud")
            self._changed_at = self._unsaved_since = 0.0
            return
        if self._changed_at == changed_at:
            self._changed_at = self._unsaved_since = 0.0
        else:
            self._unsaved_since = changed_at

    def _publish_ssm_parameters(self, region: str) -> None:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.core.utils import utcnow
        from moto.ssm.models import Parameter, ssm_backends

        from cloudsh.sandbox.images import is_dlami

        newest: dict[str, tuple[str, str]] = {}  # parameter -> (image name, id)
        for ami in self.ec2_backend(region).amis.values():
            name = ami.name or ""
            arch = ami.architecture or ""
            if is_dlami(ami) and arch in ("x86_64", "arm64"):
                param = SSM_DLAMI.format(arch=arch)
            elif "ubuntu-noble-24.04" in name and ami.owner_id == "099720109477" and arch in ("x86_64", "arm64"):
                param = SSM_UBUNTU.format(arch={"x86_64": "amd64"}.get(arch, arch))
            else:
                continue
            if param not in newest or name > newest[param][0]:
                newest[param] = (name, ami.id)
        params = ssm_backends[DEFAULT_ACCOUNT_ID][region]._parameters
        for name, (_, ami_id) in newest.items():
            params[name].append(
                Parameter(  # type: ignore[abstract]
                    account_id=DEFAULT_ACCOUNT_ID,
                    name=name,
                    value=ami_id,
                    parameter_type="String",
                    description=None,
                    allowed_pattern=None,
                    keyid=None,
                    last_modified_date=utcnow(),
                    version=1,
                    data_type="aws:ec2:image",
                )
            )

    # -- watching instances ---------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        # moto's request threads mutate the backend while we read it; a torn read is
        # simply retried on the next tick.
        for _ in range(3):
            try:
                return {i.id: i for b in self.ec2_backends() for i in b.all_instances()}
            except RuntimeError:
                continue
        return {}

    async def watch(self) -> None:
        while not self._stop.is_set():
            if not self.dir.is_dir():
                log.info("sandbox dir %s is gone; stopping", self.dir)
                self._stop.set()
                break
            instances = self._snapshot()
            for iid, inst in instances.items():
                await self._follow(iid, inst)
            self._publish()
            await self._save()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), POLL_S)

    async def _follow(self, iid: str, inst: Any) -> None:
        state = str(inst.state)
        previous = self.states.get(iid)
        self.states[iid] = state
        box = self.boxes.get(iid)
        generation = self.generation.get(iid, 0)
        if self.booted_generation.get(iid, generation) != generation:
            # Stopped (or rebooted) and started again since this box booted.
            task = self.booting.pop(iid, None)
            if task is not None:
                task.cancel()
            if box is not None and box.running:
                await box.stop()
                self.host_keys.pop(iid, None)
                log.info("%s: restarted", iid)
        if state == "running":
            self.booted_generation[iid] = generation
            retry_after = self.failed_at.get(iid, -RETRY_S) + RETRY_S
            if (box is None or not box.running) and iid not in self.booting and time.monotonic() > retry_after:
                self.booting[iid] = asyncio.ensure_future(self._boot(iid, inst))
            return
        if state == previous:
            return
        task = self.booting.pop(iid, None)
        if task is not None:
            task.cancel()
        if box is not None:
            await box.stop()
            self.host_keys.pop(iid, None)
            if state in ("shutting-down", "terminated"):
                box.delete()
                del self.boxes[iid]
        elif state in ("shutting-down", "terminated"):  # a box restored stopped, never booted since
            await asyncio.to_thread(shutil.rmtree, self.dir / "instances" / iid, True)
        log.info("%s: %s", iid, state)

    async def _boot(self, iid: str, inst: Any) -> None:
        from moto.ec2.models.instance_types import INSTANCE_TYPES

        from cloudsh.sandbox.gpu import gpu_of
        from cloudsh.sandbox.images import is_dlami
        from cloudsh.sandbox.sshd import Box

        try:
            await asyncio.sleep(self.boot_s)
            while self.storage is not None and iid in self.storage.freezing:
                await asyncio.sleep(0.05)  # CreateImage is copying its disk
            box = self.boxes.get(iid)
            if box is None:
                ip = str(getattr(inst, "private_ip", "") or "")
                hostname = f"ip-{ip.replace('.', '-')}" if ip else ""
                box = self.boxes[iid] = Box(self.dir, iid, isolation=self.isolation, hostname=hostname)
            if self.imds is not None:
                box.imds_endpoint = self.imds.endpoint_for(iid)
                box.relay_ports = (self.imds.port,)
            key_pair = inst.ec2_backend.key_pairs.get(inst.key_name) if inst.key_name else None
            public_key = key_pair.material_public.decode() if key_pair is not None else None
            await asyncio.to_thread(
                box.prepare,
                image_id=str(inst.image_id),
                public_key=public_key,
                gpu=lambda: gpu_of(INSTANCE_TYPES.get(str(inst.instance_type))),
                image_driver=is_dlami(self.ec2_backend().amis.get(str(inst.image_id))),
            )
            from cloudsh.sandbox.devices import write_devices

            await asyncio.to_thread(write_devices, self.dir, inst)
            # Its public address (a new one at each start), or without one its private one.
            address = str(inst.public_ip or inst.private_ip or "127.0.0.1")
            port = await box.start(address, self.ports.get(iid, 0))
            self.ports[iid] = port
            self.host_keys[iid] = box.host_key_line()
            self.ssh_up_at[iid] = time.monotonic()
            log.info("%s: ssh on %s:%d", iid, address, port)
            await box.run_at_boot()
            self._publish()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed_at[iid] = time.monotonic()
            log.exception("%s: could not start its SSH server (retrying in %.0f s)", iid, RETRY_S)
        finally:
            self.booting.pop(iid, None)

    # -- spot interruptions (imds.py) ------------------------------------------------------

    async def _start_imds(self) -> None:
        from moto.ec2.models.instance_types import INSTANCE_TYPES

        from cloudsh.sandbox import capacity, firewall, poweroff, vcpu_quota
        from cloudsh.sandbox.imds import Imds

        self.imds = Imds(self._spot_behaviour, self._interrupt)
        self.imds.poweroff = lambda iid: poweroff.power_off(self._snapshot().get(iid), self._lifecycle)
        self.firewall = firewall.Firewall(self.ec2_backends, self._publish)
        firewall.install(self.firewall)
        self.imds.changed = self._changed  # the knobs are saved with the cloud
        self.imds.controls[firewall.CONTROL_PATH] = self.firewall.control
        self.imds.controls["/_sandbox/capacity"] = capacity.control(
            self.capacity, lambda: [z.name for z in self.ec2_backend().describe_availability_zones()],
            INSTANCE_TYPES.__contains__,
        )
        self.imds.controls["/_sandbox/quota"] = vcpu_quota.control(self.quotas)
        await self.imds.start()

    def _spot_behaviour(self, iid: str) -> tuple[str | None, str]:
        """What an interruption does to this instance, or None and why it cannot have one."""
        inst = self._snapshot().get(iid)
        if inst is None:
            return None, f"no instance {iid}"
        if getattr(inst, "lifecycle", None) != "spot":
            return None, f"{iid} is an on-demand instance; only spot instances are interrupted"
        if str(inst.state) != "running":
            return None, f"{iid} is {inst.state}; only running instances are interrupted"
        behaviour = self.app.spot_behaviour.get(getattr(inst, "client_token", None) or "", "terminate")
        return str(behaviour), ""

    def _capacity_raised(self, itype: str, az: str, left: int | None) -> None:
        """Capacity for `itype` in `az` came back: EC2 restarts the boxes waiting for it."""
        for backend in self.ec2_backends():  # an AZ belongs to one region
            spot.restart_due(backend, lambda t, z: self.capacity.take({(t, z): 1}) is None)

    async def _interrupt(self, iid: str, action: str) -> None:
        inst = self._snapshot().get(iid)
        if inst is not None and str(inst.state) == "running":
            backend = inst.ec2_backend
            if action == "terminate":
                await asyncio.to_thread(backend.terminate_instances, [iid])
                self._lifecycle("TerminateInstances", [iid])
            else:
                await asyncio.to_thread(backend.stop_instances, [iid])
                self._lifecycle("StopInstances", [iid])
                # EC2 took the capacity back: the box waits until there is some again.
                spot.mark_interrupted(backend, inst)
                self.capacity.set(str(inst.instance_type), str(inst.placement.zone), 0)
            log.info("%s: interrupted (%s)", iid, action)
        if self.imds is not None:
            self.imds.forget(iid)

    # -- state.json -----------------------------------------------------------------------

    def _publish(self) -> None:
        instances = {}
        for iid, ec2_state in self.states.items():
            box = self.boxes.get(iid)
            ready = box is not None and box.running
            instances[iid] = SandboxInstance(
                state=ec2_state,
                ssh_port=box.port if box is not None and ready else None,
                ssh_host=box.address if box is not None and ready else None,
                host_key=box.known_host_key_line() if box is not None else "",
                ready=ready,
            )
        state = SandboxState(
            pid=os.getpid(),
            endpoint=f"http://127.0.0.1:{self.port}",
            region=REGION,
            started_at=self.started_at,
            isolation=self.isolation,
            degraded=() if self.isolation == "bubblewrap" else (NO_ISOLATION,),
            imds_endpoint=self.imds.endpoint if self.imds is not None else None,
            public_address=self.firewall.address if self.firewall is not None else "127.0.0.1",
            instances=instances,
        )
        doc = state.to_json()
        if doc != self._published and self.dir.is_dir():
            write_state(self.dir, state)
            self._published = doc

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        from cloudsh.sandbox.netns import bubblewrap_works

        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop.set)
        await asyncio.to_thread(persist.kill_leftovers, self.dir)
        restored = await asyncio.to_thread(persist.restore, self.dir)
        self.ports.update(restored.tables.get("ports", {}))
        wanted = os.environ.get("CLOUDSH_SANDBOX_ISOLATION", "").strip().lower() != "none"
        self.isolation = "bubblewrap" if wanted and await asyncio.to_thread(bubblewrap_works) else "none"
        if self.isolation == "none":
            log.warning(NO_ISOLATION)
        self.start_moto()
        self.app.spot_behaviour.update(restored.tables.get("spot_behaviour", {}))
        for instance_type, az, count in restored.tables.get("capacity", ()):
            self.capacity.set(instance_type, az, count)
        self.quotas.update({k: v for k, v in restored.tables.get("quotas", {}).items() if k in self.quotas})
        await self._start_imds()
        if restored.tables.get("address"):
            self.firewall.address = restored.tables["address"]
        (self.dir / "port").write_text(f"{self.port}\n")
        self._publish()
        log.info("moto EC2 on http://127.0.0.1:%d, isolation %s", self.port, self.isolation)
        try:
            await self.watch()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        for task in self.booting.values():
            task.cancel()
        for box in self.boxes.values():
            await box.stop()
        if self.imds is not None:
            await self.imds.close()
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "state.json").unlink()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self.dir.is_dir():
            for _ in range(3):  # the cloud and its trees (kept in place) survive the daemon
                self._changed_at = self._changed_at or time.monotonic()
                await self._save(now=True)
                if not self._changed_at:
                    break
        if self._socket is not None:
            self._socket.close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudsh.sandbox.daemon")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--boot-s", type=float, default=None)
    parser.add_argument("--consistency-s", type=float, default=None)
    parser.add_argument("--console-s", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    from cloudsh.config import Settings
    from cloudsh.sandbox import timing

    settings = Settings.load()
    boot_s = settings.sandbox_boot_s if args.boot_s is None else args.boot_s
    consistency_s = settings.sandbox_consistency_s if args.consistency_s is None else args.consistency_s
    console_s = settings.sandbox_console_s if args.console_s is None else args.console_s
    _configure_moto_env()
    sandbox_dir = args.dir.resolve()
    sandbox_dir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(sandbox_dir, args.port, boot_s, consistency_s, console_s)
    daemon.no_default_vpc = settings.sandbox_no_default_vpc not in ("", "0")
    try:
        daemon.timing = timing.parse(settings.sandbox_timing)
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    try:
        asyncio.run(daemon.run())
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log.error("port %d is in use", args.port)
        else:
            log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
