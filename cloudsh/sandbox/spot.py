"""Spot boxes after an interruption, kept as EC2 keeps them ("Behavior of Spot Instance
interruptions", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/interruption-behavior.html):

- A box stopped by an interruption says so where EC2 says it: its state reason is
  `Server.SpotInstanceShutdown` ("Find interrupted Spot Instances",
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/finding-an-interrupted-Spot-Instance.html),
  its state transition reason carries the time, and its persistent request reads
  `disabled` / `instance-stopped-no-capacity` ("Get the status of a Spot Instance request",
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-request-status.html).
- Only EC2 can restart it: `StartInstances` fails with `IncorrectSpotRequestState`, as EC2
  answers while the request is not the user's to act on (seen in
  hashicorp/terraform-provider-aws#33399).
- EC2 restarts it itself when capacity returns for its type in its AZ (`restart_due`).
- A spot box's type cannot change ("While a Spot Instance is stopped, you can modify some
  of its instance attributes, but not the instance type"): `ModifyInstanceAttribute` of
  `instanceType` fails with `UnsupportedOperation`, worded as EC2 words its other spot
  refusals ("Modifying 'disableApiTermination' is not supported for spot instances.",
  cloud-custodian/cloud-custodian#2083).
- `LaunchTime` is the time of the last start, as EC2 reports it (moto keeps the first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloudsh.sandbox.wsgi import Ec2Error

log = logging.getLogger("cloudsh.sandbox.spot")

INTERRUPTED = "Server.SpotInstanceShutdown"
WAITING = "instance-stopped-no-capacity"


def _instance(backend: Any, instance_id: str) -> Any | None:
    return next((i for i in list(backend.all_instances()) if i.id == instance_id), None)


def _request(backend: Any, inst: Any) -> Any | None:
    rid = getattr(inst, "spot_instance_request_id", None)
    return backend.spot_instance_requests.get(rid) if rid else None


def is_waiting(backend: Any, inst: Any) -> bool:
    """Stopped by an interruption and waiting for EC2 to restart it (its request says so)."""
    req = _request(backend, inst)
    return str(inst.state) == "stopped" and req is not None and getattr(req, "_status_code", "") == WAITING


def mark_interrupted(backend: Any, inst: Any) -> None:
    """Record the interruption of a box just stopped by it, as EC2 records it."""
    from moto.ec2.models.instances import StateReason

    now = datetime.now(UTC)
    inst._reason = f"Service initiated ({now:%Y-%m-%d %H:%M:%S} GMT)"
    inst.state_reason = StateReason(f"{INTERRUPTED}: Spot instance interrupted", INTERRUPTED)
    req = _request(backend, inst)
    if req is not None:
        req.state = "disabled"
        req._status_code = WAITING
        req.status_message = (
            "Your Spot Instance was stopped because there is no Spot capacity available that matches your request."
        )


def check(backend: Any, action: str, params: dict[str, str]) -> None:
    """EC2's refusals for spot boxes, raised as `Ec2Error`; silent for everything else."""
    if action == "StartInstances":
        for n in range(1, 1000):
            iid = params.get(f"InstanceId.{n}")
            if iid is None:
                break
            inst = _instance(backend, iid)
            if inst is not None and is_waiting(backend, inst):
                raise Ec2Error(
                    "IncorrectSpotRequestState",
                    f"The spot instance request '{inst.spot_instance_request_id}' for instance '{iid}' is in state 'disabled' "
                    f"with status '{WAITING}'; only Amazon EC2 can start an instance stopped by a "
                    "Spot interruption.",
                )
    elif action == "ModifyInstanceAttribute":
        if params.get("InstanceType.Value") is None and params.get("Attribute") != "instanceType":
            return
        inst = _instance(backend, params.get("InstanceId", ""))
        if inst is not None and getattr(inst, "lifecycle", None) == "spot":
            raise Ec2Error("UnsupportedOperation", "Modifying 'instanceType' is not supported for spot instances.")


def started(backend: Any, instance_ids: list[str]) -> None:
    """A successful start: EC2's LaunchTime is the time of the last start."""
    from moto.core.utils import utcnow

    for iid in instance_ids:
        inst = _instance(backend, iid)
        if inst is not None:
            inst.launch_time = utcnow()


def restart_due(backend: Any, take: Callable[[str, str], bool]) -> list[str]:
    """Restart the interrupted boxes whose type has capacity again in their AZ.

    `take(type, az)` says whether one more box of that type may start there, and counts
    it when it may. Returns the ids restarted.
    """
    done = []
    for inst in list(backend.all_instances()):
        if not is_waiting(backend, inst):
            continue
        itype, az = str(inst.instance_type), str(inst.placement.zone)
        if not take(itype, az):
            continue
        backend.start_instances([inst.id])
        started(backend, [inst.id])
        req = _request(backend, inst)
        if req is not None:
            req.state, req._status_code, req.status_message = "active", "fulfilled", ""
        log.info("%s: capacity for %s in %s is back; restarted", inst.id, itype, az)
        done.append(inst.id)
    return done

