"""The sandbox daemon: moto's EC2 server plus one SSH server per running instance.

Run as `python -m cloudsh.sandbox.daemon --dir DIR --port PORT [--boot-s S] [--consistency-s S]`, normally by
`cloudsh.sandbox.control.sandbox_up`. It serves moto in-process (so it can watch moto's
EC2 backend directly), follows each instance's state, and publishes what clients need in
`DIR/state.json`. SIGTERM/SIGINT, or deleting DIR, stop it and everything it started.
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

from cloudsh.sandbox.state import REGION, SandboxInstance, SandboxState, write_state

log = logging.getLogger("cloudsh.sandbox.daemon")

AMIS_PATH = Path(__file__).with_name("ubuntu_amis.json")
POLL_S = 0.1
RETRY_S = 5.0
NO_ISOLATION = "commands on sandbox boxes run without isolation (install bubblewrap)"

#: SSM public parameters Canonical publishes for the current Ubuntu LTS, by architecture.
SSM_UBUNTU = "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id"


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
    def __init__(self, sandbox_dir: Path, port: int, boot_s: float, consistency_s: float = 0.0) -> None:
        self.dir = sandbox_dir
        self.port = port
        self.boot_s = boot_s
        self.consistency_s = consistency_s
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
        self._published: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._server: Any = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.app: Any = None  # the SandboxEc2App, for what moto drops (spot behaviour)
        self.storage: Any = None  # storage.StorageLayer: which boxes CreateImage is copying
        self.imds: Any = None  # imds.Imds: instance metadata and spot interruptions

    # -- moto -----------------------------------------------------------------------------

    def ec2_backend(self) -> Any:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        return ec2_backends[DEFAULT_ACCOUNT_ID][REGION]

    def start_moto(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        from cloudsh.sandbox.consistency import ConsistencyLayer
        from cloudsh.sandbox.moto_app import SandboxEc2App
        from cloudsh.sandbox.storage import StorageLayer

        self.storage = StorageLayer(
            DomainDispatcherApplication(create_backend_app), self.dir, self.ec2_backend, self._lifecycle
        )
        app = SandboxEc2App(
            self.storage,
            self.ec2_backend,
            self.host_keys.get,
            self._lifecycle,
        )
        self.app = app
        # Bound here rather than by werkzeug, which prints its own advice and exits.
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
        self._server = make_server(
            "127.0.0.1", self.port, ConsistencyLayer(app, self.consistency_s), threaded=True,
            request_handler=MotoRequestHandler,
            fd=sock.fileno(),
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._publish_images()

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

    def _publish_images(self) -> None:
        """Build the backend (and load the AMIs) before the first request; give the
        published images their real root snapshot and name them where EC2 does (SSM)."""
        from moto.core.models import DEFAULT_ACCOUNT_ID

        from cloudsh.sandbox.images import publish_sizes

        publish_sizes(self.ec2_backend(), DEFAULT_ACCOUNT_ID)
        self._publish_ssm_parameters()

    def _publish_ssm_parameters(self) -> None:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.core.utils import utcnow
        from moto.ssm.models import Parameter, ssm_backends

        newest: dict[str, tuple[str, str]] = {}
        for ami in self.ec2_backend().amis.values():
            name = ami.name or ""
            if "ubuntu-noble-24.04" not in name or ami.owner_id != "099720109477":
                continue
            arch = {"x86_64": "amd64", "arm64": "arm64"}.get(ami.architecture or "")
            if arch and (arch not in newest or name > newest[arch][0]):
                newest[arch] = (name, ami.id)
        params = ssm_backends[DEFAULT_ACCOUNT_ID][REGION]._parameters
        for arch, (_, ami_id) in newest.items():
            name = SSM_UBUNTU.format(arch=arch)
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
                return {i.id: i for i in self.ec2_backend().all_instances()}
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
        log.info("%s: %s", iid, state)

    async def _boot(self, iid: str, inst: Any) -> None:
        from moto.ec2.models.instance_types import INSTANCE_TYPES

        from cloudsh.sandbox.gpu import gpu_of
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
            key_pair = self.ec2_backend().key_pairs.get(inst.key_name) if inst.key_name else None
            public_key = key_pair.material_public.decode() if key_pair is not None else None
            await asyncio.to_thread(
                box.prepare,
                image_id=str(inst.image_id),
                public_key=public_key,
                gpu=lambda: gpu_of(INSTANCE_TYPES.get(str(inst.instance_type))),
            )
            from cloudsh.sandbox.devices import write_devices

            await asyncio.to_thread(write_devices, self.dir, inst)
            port = await box.start(self.ports.get(iid, 0))
            self.ports[iid] = port
            self.host_keys[iid] = box.host_key_line()
            log.info("%s: ssh on 127.0.0.1:%d", iid, port)
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
        from cloudsh.sandbox.imds import Imds

        self.imds = Imds(self._spot_behaviour, self._interrupt)
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

    async def _interrupt(self, iid: str, action: str) -> None:
        inst = self._snapshot().get(iid)
        if inst is not None and str(inst.state) == "running":
            backend = self.ec2_backend()
            if action == "terminate":
                await asyncio.to_thread(backend.terminate_instances, [iid])
                self._lifecycle("TerminateInstances", [iid])
            else:
                await asyncio.to_thread(backend.stop_instances, [iid])
                self._lifecycle("StopInstances", [iid])
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
            instances=instances,
        )
        doc = state.to_json()
        if doc != self._published and self.dir.is_dir():
            write_state(self.dir, state)
            self._published = doc

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        from cloudsh.sandbox.sshd import bubblewrap_works

        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop.set)
        # moto keeps the cloud in memory, so trees left by an earlier run belong to nothing.
        await asyncio.to_thread(shutil.rmtree, self.dir / "instances", True)
        for trees in ("images", "volumes", "snapshots"):  # sandbox/storage.py
            await asyncio.to_thread(shutil.rmtree, self.dir / trees, True)
        self.isolation = "bubblewrap" if await asyncio.to_thread(bubblewrap_works) else "none"
        if self.isolation == "none":
            log.warning(NO_ISOLATION)
        self.start_moto()
        await self._start_imds()
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
        shutil.rmtree(self.dir / "instances", ignore_errors=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._socket is not None:
            self._socket.close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudsh.sandbox.daemon")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--boot-s", type=float, default=None)
    parser.add_argument("--consistency-s", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    boot_s, consistency_s = args.boot_s, args.consistency_s
    if boot_s is None or consistency_s is None:
        from cloudsh.config import Settings

        settings = Settings.load()
        boot_s = settings.sandbox_boot_s if boot_s is None else boot_s
        consistency_s = settings.sandbox_consistency_s if consistency_s is None else consistency_s
    _configure_moto_env()
    sandbox_dir = args.dir.resolve()
    sandbox_dir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(sandbox_dir, args.port, boot_s, consistency_s)
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
