"""The sandbox enforces EC2's vCPU quotas (`quotas.py`'s table) at RunInstances and StartInstances.

EC2 counts the vCPUs of running (and pending) instances per family class and market
against one Service Quotas value each ("Amazon EC2 service quotas",
https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html). A launch
or start past it is refused, a client error (HTTP 400):

- on-demand: `VcpuLimitExceeded`, "You have requested more vCPU capacity than your
  current vCPU limit of N allows for the instance bucket that the specified instance type
  belongs to. ..." ("Error codes for the Amazon EC2 API",
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html);
- spot: `MaxSpotInstanceCountExceeded`, "Max spot instance count exceeded" ("Spot
  Instance quotas", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-spot-limits.html).

`cloudsh sandbox quota CODE VALUE` changes a value in the running daemon (`control`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cloudsh.sandbox import wsgi
from cloudsh.sandbox.wsgi import StartResponse, WsgiApp
from cloudsh.services.quotas import QUOTA_CODES, family_class

_SPOT_CODES = frozenset(spot for _, spot, _ in QUOTA_CODES.values())

#: quota code -> (name, vCPUs): the same dict object the Service Quotas answers read.
Table = dict[str, tuple[str, float]]


def type_vcpus(instance_type: str) -> int:
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    info = INSTANCE_TYPES.get(instance_type) or {}
    return int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0) or 0)


def quota_code(instance_type: str, spot: bool) -> str:
    on_demand, spot_code, _ = QUOTA_CODES[family_class(instance_type)]
    return spot_code if spot else on_demand


class QuotaLayer:
    """Refuses `RunInstances` / `StartInstances` that would pass a vCPU quota."""

    def __init__(self, app: WsgiApp, table: Table, ec2_backend: Callable[[], Any]) -> None:
        self.app = app
        self.table = table
        self.ec2_backend = ec2_backend
        # Check and launch as one step, so two launches cannot both fit the last vCPUs.
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = wsgi.params(environ)
        action = params.get("Action", "")
        if action not in ("RunInstances", "StartInstances"):
            return self.app(environ, start_response)
        with self._lock:
            if action == "RunInstances":
                spot = params.get("InstanceMarketOptions.MarketType") == "spot"
                count = max(1, int(params.get("MinCount") or 1))
                wanted = [(params.get("InstanceType", "m1.small"), spot)] * count
            else:
                ids = set(wsgi.numbered(params, "InstanceId"))
                wanted = [
                    (str(i.instance_type), _is_spot(i)) for i in self.ec2_backend().all_instances()
                    if i.id in ids and str(i.state) == "stopped"
                ]
            refusal = self._refusal(wanted)
            if refusal is not None:
                return wsgi.respond(start_response, "400 Bad Request", refusal)
            status, headers, body = wsgi.call(self.app, environ)
        start_response(status, headers)
        return [body]

    def _refusal(self, wanted: list[tuple[str, bool]]) -> str | None:
        need: dict[str, int] = {}
        for itype, spot in wanted:
            code = quota_code(itype, spot)
            need[code] = need.get(code, 0) + type_vcpus(itype)
        if not need:
            return None
        used: dict[str, int] = {}
        for inst in self.ec2_backend().all_instances():
            if str(inst.state) in ("pending", "running"):
                code = quota_code(str(inst.instance_type), _is_spot(inst))
                used[code] = used.get(code, 0) + type_vcpus(str(inst.instance_type))
        for code, n in need.items():
            limit = self.table.get(code, ("", float("inf")))[1]
            if used.get(code, 0) + n <= limit:
                continue
            if code in _SPOT_CODES:
                return wsgi.error_xml("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")
            return wsgi.error_xml(
                "VcpuLimitExceeded",
                f"You have requested more vCPU capacity than your current vCPU limit of {limit:g} allows "
                "for the instance bucket that the specified instance type belongs to. Please visit "
                "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.",
            )
        return None


def _is_spot(inst: Any) -> bool:
    return getattr(inst, "lifecycle", None) == "spot"


def control(table: Table) -> Callable[[str, bytes], tuple[int, str]]:
    """The handler of the daemon's `/_sandbox/quota`: POST `{"code": C, "value": V}`."""

    def handle(method: str, body: bytes) -> tuple[int, str]:
        if method != "POST":
            return 405, "Method Not Allowed"
        try:
            req = json.loads(body or b"{}")
            code, value = str(req["code"]), float(req["value"])
        except (ValueError, KeyError, TypeError):
            return 400, 'expected {"code": ..., "value": ...}'
        if code not in table:
            return 400, f"{code} is not an EC2 vCPU quota the sandbox serves ({', '.join(sorted(table))})"
        if value < 0:
            return 400, f"a quota of {value:g} vCPUs: use 0 or more"
        name = table[code][0]
        table[code] = (name, value)
        return 200, json.dumps({"code": code, "name": name, "value": value})

    return handle
