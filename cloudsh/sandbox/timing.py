"""EC2's in-between states, which moto skips: instances `pending` before `running`,
`stopping` before `stopped`, `shutting-down` before `terminated`; images `pending`,
snapshots `pending` with a growing `progress`, volumes `creating`.

"Amazon EC2 instance state changes"
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html): an
instance is `pending` while it is made ready (codes: pending 0, running 16, shutting-down
32, terminated 48, stopping 64, stopped 80); `StartInstances` refuses an instance that
is still `stopping` (IncorrectInstanceState). An image is `pending` until it is ready,
a snapshot `pending` until complete with `progress` in percent, a volume `creating`
until `available` ("Amazon EBS volume lifecycle").

`CLOUDSH_SANDBOX_TIMING`: `short` (default, about 1 s each: never zero, so clients must
wait), `ec2` (EC2's usual durations: tens of seconds for instances, minutes for images
and snapshots), or a number of seconds used for every step.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cloudsh.sandbox import wsgi
from cloudsh.sandbox.wsgi import StartResponse, WsgiApp

_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}


@dataclass(frozen=True)
class Timing:
    pending_s: float = 1.0
    stopping_s: float = 1.0
    shutting_down_s: float = 1.0
    image_s: float = 1.0
    snapshot_s: float = 1.0
    volume_s: float = 1.0


#: EC2's usual durations (observed, they vary): a few tens of seconds to start or stop,
#: minutes for an image or a snapshot of a fresh root volume, seconds for a volume.
EC2 = Timing(pending_s=15.0, stopping_s=20.0, shutting_down_s=15.0, image_s=180.0, snapshot_s=120.0, volume_s=5.0)


def parse(value: str) -> Timing:
    """`short`, `ec2`, or seconds for every step (at least 0.05: never zero)."""
    value = (value or "short").strip().lower()
    if value == "ec2":
        return EC2
    if value == "short":
        return Timing()
    try:
        s = max(0.05, float(value))
    except ValueError:
        raise ValueError(f"CLOUDSH_SANDBOX_TIMING={value!r}: use short, ec2 or a number of seconds") from None
    return Timing(s, s, s, s, s, s)


class TimingLayer:
    """After moto answers a create/start/stop/terminate, holds the result in EC2's in-between state."""

    def __init__(self, app: WsgiApp, timing: Timing, ec2_backend: Callable[[], Any]) -> None:
        self.app = app
        self.timing = timing
        self.ec2_backend = ec2_backend
        _patch_moto()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = wsgi.params(environ)
        action = params.get("Action", "")
        if action == "StartInstances":
            stopping = [i.id for i in self._instances(wsgi.numbered(params, "InstanceId")) if i._state.name == "stopping"]
            if stopping:
                return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(
                    "IncorrectInstanceState",
                    f"The instance '{stopping[0]}' is not in a state from which it can be started.",
                ))
        step = _STEPS.get(action)
        if step is None:
            return self.app(environ, start_response)
        # Only what this call moves is held (a stop of a stopped box stays stopped).
        before = {i.id: i._state.name for i in self._instances(wsgi.numbered(params, "InstanceId"))}
        status, headers, body = wsgi.call(self.app, environ)
        if status.startswith("200"):
            element, between, after, seconds = step
            ids = [n for n in dict.fromkeys(re.findall(rf"<{element}>([^<]+)</{element}>", body.decode()))
                   if before.get(n) != after]
            self._hold(action, ids, between, after, getattr(self.timing, seconds))
        start_response(status, headers)
        return [body]

    def _instances(self, ids: list[str]) -> list[Any]:
        wanted = set(ids)
        return [i for i in self.ec2_backend().all_instances() if i.id in wanted]

    def _hold(self, action: str, ids: list[str], between: str, after: str, seconds: float) -> None:
        backend = self.ec2_backend()
        if action.endswith("Instances"):
            for inst in self._instances(ids):
                if inst._state.name == after:
                    _set_state(inst, between)
                    _later(seconds, _finish_instance, inst, between, after)
        elif action == "CreateImage":
            for image_id in ids:
                ami = backend.amis.get(image_id)
                if ami is not None:
                    # Available once both this time and the copy of its disk (storage.py) are over.
                    ami.state, ami.cloudsh_held = "pending", True
                    _later(seconds, _finish_image, ami)
        elif action == "CreateSnapshot":
            for snap_id in ids:
                snap = backend.snapshots.get(snap_id)
                if snap is not None:
                    snap.status = "pending"
                    snap.cloudsh_ready_at = (time.monotonic(), time.monotonic() + seconds)
                    _later(seconds, _finish_attr, snap, "status", "pending", "completed")
        elif action == "CreateVolume":
            for vol_id in ids:
                vol = backend.volumes.get(vol_id)
                if vol is not None:
                    vol.cloudsh_ready_at = (time.monotonic(), time.monotonic() + seconds)


#: action -> (element naming what it made/moved, state in between, state moto set, Timing field)
_STEPS = {
    "RunInstances": ("instanceId", "pending", "running", "pending_s"),
    "StartInstances": ("instanceId", "pending", "running", "pending_s"),
    "StopInstances": ("instanceId", "stopping", "stopped", "stopping_s"),
    "TerminateInstances": ("instanceId", "shutting-down", "terminated", "shutting_down_s"),
    "CreateImage": ("imageId", "pending", "available", "image_s"),
    "CreateSnapshot": ("snapshotId", "pending", "completed", "snapshot_s"),
    "CreateVolume": ("volumeId", "creating", "available", "volume_s"),
}


def _set_state(inst: Any, name: str) -> None:
    inst._state.name = name
    inst._state.code = _CODES[name]


def _finish_instance(inst: Any, between: str, after: str) -> None:
    if inst._state.name == between:  # nothing else moved it meanwhile
        _set_state(inst, after)


def _finish_image(ami: Any) -> None:
    ami.cloudsh_held = False
    if ami.state == "pending" and getattr(ami, "cloudsh_copied", False):
        ami.state = "available"


def _finish_attr(obj: Any, attr: str, between: str, after: str) -> None:
    if getattr(obj, attr, None) == between:
        setattr(obj, attr, after)


def _later(seconds: float, fn: Callable[..., None], *args: Any) -> None:
    timer = threading.Timer(seconds, fn, args)
    timer.daemon = True
    timer.start()


_patched = False


def _patch_moto() -> None:
    """moto computes a volume's state and a snapshot's progress; while a create is under
    way they say `creating` and the share done, as EC2 does."""
    global _patched
    if _patched:
        return
    from moto.ec2.models.elastic_block_store import Snapshot, Volume

    status: Any = Volume.status  # a property

    def volume_status(self: Any) -> str:
        _, ready = getattr(self, "cloudsh_ready_at", (0.0, 0.0))
        return "creating" if time.monotonic() < ready else str(status.fget(self))

    def snapshot_progress(self: Any) -> str:
        start, ready = getattr(self, "cloudsh_ready_at", (0.0, 0.0))
        now = time.monotonic()
        if now >= ready:
            return "100%"
        return f"{int(99 * (now - start) / max(ready - start, 1e-6))}%"

    Volume.status = property(volume_status)  # type: ignore[method-assign,assignment]
    Snapshot.progress = property(snapshot_progress)  # type: ignore[method-assign,assignment]
    _patched = True
