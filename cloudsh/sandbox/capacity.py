"""The sandbox's instance capacity: how many more instances of a type may start in an AZ.

On EC2 capacity runs out per instance type and Availability Zone; `RunInstances` and
`StartInstances` then fail with `InsufficientInstanceCapacity`, a *server* error (HTTP
500): "Error codes for the Amazon EC2 API"
(https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html) lists it
under the server error codes, which "are accompanied by a 500-series HTTP response code".
The message names the type and AZ and where capacity may be found, as EC2 words it
("We currently do not have sufficient p3.2xlarge capacity in the Availability Zone you
requested (us-east-1a). Our system will be working on provisioning additional capacity.
You can currently get p3.2xlarge capacity by not specifying an Availability Zone in your
request or choosing us-east-1b, us-east-1c.").

`CapacityLedger` keeps the counts (absent = unlimited, the default); `cloudsh sandbox
capacity TYPE AZ N` sets one through the daemon's control endpoint (`control`). Each
instance that starts takes one; stopping gives none back (N counts starts, not room).
Code in the daemon can `subscribe` to hear when capacity for a type and AZ is raised,
to restart what was waiting for it. `CapacityLayer` is the WSGI layer that enforces it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from cloudsh.sandbox import wsgi
from cloudsh.sandbox.wsgi import StartResponse, WsgiApp

log = logging.getLogger("cloudsh.sandbox.capacity")

#: Called with (instance type, AZ, how many more may start, None = unlimited) when raised.
Listener = Callable[[str, str, "int | None"], None]


class CapacityLedger:
    """How many more instances may start per (type, AZ). Safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left: dict[tuple[str, str], int] = {}
        self._listeners: list[Listener] = []

    def left(self, instance_type: str, az: str) -> int | None:
        """How many more may start; None when unlimited."""
        with self._lock:
            return self._left.get((instance_type, az))

    def limits(self) -> list[tuple[str, str, int]]:
        """Every limited (type, AZ) and how many more may start there (for persist.py)."""
        with self._lock:
            return [(t, az, n) for (t, az), n in self._left.items()]

    def set(self, instance_type: str, az: str, count: int | None) -> None:
        """`count` more may start (None or negative: unlimited). Listeners hear of a raise."""
        count = None if count is None or count < 0 else count
        key = (instance_type, az)
        with self._lock:
            before = self._left.get(key)
            if count is None:
                self._left.pop(key, None)
            else:
                self._left[key] = count
            listeners = list(self._listeners)
        raised = before is not None and (count is None or count > before)
        if raised:
            for listener in listeners:
                try:
                    listener(instance_type, az, count)
                except Exception:  # one failing listener must not stop the others
                    log.exception("capacity listener failed for %s in %s", instance_type, az)

    def take(self, wanted: dict[tuple[str, str], int]) -> tuple[str, str] | None:
        """Take capacity for every (type, AZ) in `wanted`, all or nothing.
        Returns None on success, else the first (type, AZ) that lacks it."""
        with self._lock:
            for key, n in wanted.items():
                left = self._left.get(key)
                if left is not None and left < n:
                    return key
            for key, n in wanted.items():
                if key in self._left:
                    self._left[key] -= n
        return None

    def give_back(self, wanted: dict[tuple[str, str], int]) -> None:
        """Undo a `take` whose call failed (no listener hears of it: nothing was waiting)."""
        with self._lock:
            for key, n in wanted.items():
                if key in self._left:
                    self._left[key] += n

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(type, az, left)` whenever capacity for a type and AZ is raised,
        from the thread that raised it: for `cloudsh sandbox capacity`, the daemon's event
        loop (imds.py serves the control path), so it must not block. A restart it makes
        should `take` the capacity it uses. Returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def as_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"instance_type": t, "az": az, "count": n} for (t, az), n in sorted(self._left.items())
            ]


def insufficient_capacity_xml(instance_type: str, az: str, elsewhere: list[str]) -> str:
    """EC2's `InsufficientInstanceCapacity` answer for one type and AZ."""
    where = (
        f" You can currently get {instance_type} capacity by not specifying an Availability Zone "
        f"in your request or choosing {', '.join(elsewhere)}."
        if elsewhere else ""
    )
    return wsgi.error_xml(
        "InsufficientInstanceCapacity",
        f"We currently do not have sufficient {instance_type} capacity in the Availability Zone "
        f"you requested ({az}). Our system will be working on provisioning additional capacity.{where}",
    )


class CapacityLayer:
    """Refuses `RunInstances` / `StartInstances` beyond the ledger, as EC2 does (HTTP 500).

    `RunInstances` without a placement goes to an AZ that has capacity, as EC2 chooses
    one when none is asked for; with one (or a subnet) it runs there or fails."""

    def __init__(self, app: WsgiApp, ledger: CapacityLedger, ec2_backend: Callable[[], Any]) -> None:
        self.app = app
        self.ledger = ledger
        self.ec2_backend = ec2_backend

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = wsgi.params(environ)
        action = params.get("Action", "")
        if action == "RunInstances":
            wanted = self._run_wanted(environ, params)
        elif action == "StartInstances":
            wanted = self._start_wanted(wsgi.numbered(params, "InstanceId"))
        else:
            return self.app(environ, start_response)
        short = self.ledger.take(wanted)
        if short is not None:
            itype, az = short
            refusal = insufficient_capacity_xml(itype, az, self._zones_with(itype, exclude=az))
            return wsgi.respond(start_response, "500 Internal Server Error", refusal)
        status, headers, body = wsgi.call(self.app, environ)
        if not status.startswith("200"):
            self.ledger.give_back(wanted)
        start_response(status, headers)
        return [body]

    def _zones(self) -> list[str]:
        return [z.name for z in self.ec2_backend().describe_availability_zones()]

    def _has(self, instance_type: str, az: str, count: int = 1) -> bool:
        left = self.ledger.left(instance_type, az)
        return left is None or left >= count

    def _zones_with(self, instance_type: str, exclude: str = "") -> list[str]:
        return [z for z in self._zones() if z != exclude and self._has(instance_type, z)]

    def _run_wanted(self, environ: dict[str, Any], params: dict[str, str]) -> dict[tuple[str, str], int]:
        itype = params.get("InstanceType", "m1.small")
        count = max(1, int(params.get("MinCount") or 1))
        az = params.get("Placement.AvailabilityZone", "")
        subnet_id = params.get("SubnetId") or params.get("NetworkInterface.1.SubnetId", "")
        if not az and subnet_id:
            try:
                az = self.ec2_backend().get_subnet(subnet_id).availability_zone
            except Exception:
                return {}  # an unknown subnet: moto answers with EC2's error
        if not az:
            # No AZ asked for: EC2 picks one with capacity (moto would pick the first).
            zones = self._zones()
            az = next((z for z in zones if self._has(itype, z, count)), zones[0] if zones else "")
            if zones and az != zones[0]:
                wsgi.set_body(environ, urlencode({**params, "Placement.AvailabilityZone": az}).encode())
        return {(itype, az): count}

    def _start_wanted(self, instance_ids: list[str]) -> dict[tuple[str, str], int]:
        wanted: dict[tuple[str, str], int] = {}
        for inst in self.ec2_backend().all_instances():
            if inst.id in instance_ids and str(inst.state) == "stopped":
                key = (str(inst.instance_type), str(inst.placement.zone))
                wanted[key] = wanted.get(key, 0) + 1
        return wanted


def control(ledger: CapacityLedger, zones: Callable[[], list[str]], known_type: Callable[[str], bool]) -> Callable[[str, bytes], tuple[int, str]]:
    """The handler of the daemon's `/_sandbox/capacity`: GET lists the limits, POST
    `{"instance_type": T, "az": AZ, "count": N}` sets one (N < 0: unlimited)."""

    def handle(method: str, body: bytes) -> tuple[int, str]:
        if method == "GET":
            return 200, json.dumps(ledger.as_json())
        if method != "POST":
            return 405, "Method Not Allowed"
        try:
            req = json.loads(body or b"{}")
            itype, az, count = str(req["instance_type"]), str(req["az"]), int(req["count"])
        except (ValueError, KeyError, TypeError):
            return 400, 'expected {"instance_type": ..., "az": ..., "count": ...}'
        if not known_type(itype):
            return 400, f"{itype} is not an EC2 instance type"
        names = zones()
        if az not in names:
            return 400, f"{az} is not an Availability Zone of this region ({', '.join(names)})"
        ledger.set(itype, az, count)
        return 200, json.dumps({"instance_type": itype, "az": az, "count": ledger.left(itype, az)})

    return handle
