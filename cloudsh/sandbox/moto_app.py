"""A WSGI layer in front of moto's server that makes it answer like EC2 where moto does not.

Only EC2 query-protocol calls (form-encoded `Action=...`) are looked at; everything else
goes to moto untouched. What it changes:

- `ModifyInstanceAttribute` of the instance type on an instance that is not stopped fails
  with `IncorrectInstanceState` (moto allows it).
- `RunInstances` / `ModifyInstanceAttribute` with a type whose architectures do not include
  the AMI's fail with `InvalidParameterValue`, worded as EC2 words it.
- `DescribeSpotPriceHistory` is answered from `cloudsh.sandbox.prices` (moto's answer is a
  constant 0.00001).
- `RunInstances` with a `ClientToken` already used returns the instances that token made
  (EC2's idempotency, which botocore's retries rely on); moto makes a second box.
- `CreateVolume` with a `ClientToken` already used answers what the first call did (EC2's
  idempotency, "Ensuring idempotency in Amazon EC2 API requests", EC2 developer guide;
  botocore fills the token in and its retries rely on it); moto makes a second volume.
- Tags beyond EC2's limits (50 per resource, keys 128 and values 256 characters) fail
  as EC2 fails them (`tags.py`).
- Spot boxes: `StartInstances` of one stopped by an interruption and `ModifyInstanceAttribute`
  of a spot box's type fail as on EC2; `StartInstances` sets `LaunchTime` (`spot.py`).
- `GetConsoleOutput` has no output until cloud-init has printed the host-key block
  (`CLOUDSH_SANDBOX_CONSOLE_S` after the box's SSH server is up), then that block, as
  Ubuntu on EC2 does, so a first host key is checked the same way everywhere.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from cloudsh.sandbox import spot, tags, wsgi
from cloudsh.sandbox.wsgi import Ec2Error, StartResponse, WsgiApp

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
LIFECYCLE_ACTIONS = frozenset({"StopInstances", "StartInstances", "RebootInstances", "TerminateInstances"})


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_time(value: str) -> datetime:
    if value.replace(".", "", 1).isdigit():
        return datetime.fromtimestamp(float(value), UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def type_architectures(instance_type: str) -> list[str] | None:
    """Architectures an instance type supports (moto's type data), None if unknown."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    info = INSTANCE_TYPES.get(instance_type)
    if info is None:
        return None
    return list(info.get("ProcessorInfo", {}).get("SupportedArchitectures", []))


class SandboxEc2App:
    """The WSGI app the daemon serves: EC2 fixes first, then moto.

    `ec2_backend` returns moto's EC2 backend for the sandbox's account and region;
    `host_key_of(instance_id)` returns the box's public host key once its console shows it, or None;
    `on_lifecycle(action, instance_ids)` hears of every successful Stop/Start/Reboot/
    TerminateInstances, since a fast stop-then-start can fall between two looks at moto.
    """

    def __init__(
        self,
        moto_app: WsgiApp,
        ec2_backend: Callable[[], Any],
        host_key_of: Callable[[str], str | None],
        on_lifecycle: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.moto_app = moto_app
        self.ec2_backend = ec2_backend
        self.host_key_of = host_key_of
        self.on_lifecycle = on_lifecycle
        self._token_lock = threading.Lock()
        #: ClientToken -> the spot InstanceInterruptionBehavior asked for (moto drops it);
        #: the daemon reads it to play `sandbox interrupt`.
        self.spot_behaviour: dict[str, str] = {}
        #: (action, ClientToken) -> the first answer, for idempotent creates other than RunInstances.
        self._answered: dict[tuple[str, str], tuple[str, list[tuple[str, str]], bytes]] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = wsgi.params(environ)
        action = params.get("Action", "")
        try:
            tags.check(params)
        except Ec2Error as err:
            return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(err.code, err.message))
        if action == "RunInstances" and params.get("ClientToken"):
            # Check-then-create must not interleave with a retry of the same call.
            with self._token_lock:
                return self._run_instances_once(environ, start_response, params)
        if action == "CreateVolume" and params.get("ClientToken"):
            with self._token_lock:
                return self._create_once(environ, start_response, (action, params["ClientToken"]))
        handler = {
            "ModifyInstanceAttribute": self._modify_instance_attribute,
            "RunInstances": self._run_instances,
            "DescribeSpotPriceHistory": self._describe_spot_price_history,
            "GetConsoleOutput": self._get_console_output,
        }.get(action)
        try:
            spot.check(self.ec2_backend(), action, params)
        except Ec2Error as err:
            return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(err.code, err.message))
        if action in LIFECYCLE_ACTIONS and self.on_lifecycle is not None:
            return self._lifecycle(environ, start_response, action, params)
        if handler is not None:
            try:
                body = handler(params)
            except Ec2Error as err:
                return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(err.code, err.message))
            if body is not None:
                return wsgi.respond(start_response, "200 OK", body)
        return self.moto_app(environ, start_response)

    def _create_once(
        self, environ: dict[str, Any], start_response: StartResponse, key: tuple[str, str]
    ) -> Iterable[bytes]:
        """The first answer to this (action, ClientToken), made once."""
        answer = self._answered.get(key)
        if answer is None:
            answer = wsgi.call(self.moto_app, environ)
            if answer[0].startswith("200"):
                self._answered[key] = answer
        start_response(answer[0], answer[1])
        return [answer[2]]

    def _lifecycle(
        self, environ: dict[str, Any], start_response: StartResponse, action: str, params: dict[str, str]
    ) -> Iterable[bytes]:
        status, headers, body = wsgi.call(self.moto_app, environ)
        if status.startswith("200") and action == "StartInstances":
            spot.started(self.ec2_backend(), wsgi.numbered(params, "InstanceId"))
        if status.startswith("200") and self.on_lifecycle is not None:
            self.on_lifecycle(action, wsgi.numbered(params, "InstanceId"))
        start_response(status, headers)
        return [body]

    # -- request parsing -------------------------------------------------------------------

    def _instance(self, instance_id: str) -> Any | None:
        for inst in self.ec2_backend().all_instances():
            if inst.id == instance_id:
                return inst
        return None

    def _image_architecture(self, image_id: str) -> str | None:
        ami = self.ec2_backend().amis.get(image_id)
        return getattr(ami, "architecture", None) if ami is not None else None

    @staticmethod
    def _check_architecture(instance_type: str, image_arch: str | None) -> None:
        archs = type_architectures(instance_type)
        if not archs or not image_arch or image_arch in archs:
            return
        raise Ec2Error(
            "InvalidParameterValue",
            f"The architecture '{archs[0]}' of the specified instance type does not match the "
            f"architecture '{image_arch}' of the specified AMI. Specify an instance type and an "
            "AMI that have matching architectures, and try again. You can use "
            "'describe-instance-types' or 'describe-images' to discover the architecture of "
            "the instance type or AMI.",
        )

    # -- handlers: return a response body, or None to let moto answer ---------------------

    def _run_instances_once(
        self, environ: dict[str, Any], start_response: StartResponse, params: dict[str, str]
    ) -> Iterable[bytes]:
        token = params["ClientToken"]
        made = [
            i.id for i in self.ec2_backend().all_instances()
            if getattr(i, "client_token", None) == token
        ]
        if not made:
            try:
                self._run_instances(params)
            except Ec2Error as err:
                return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(err.code, err.message))
            return list(self.moto_app(environ, start_response))
        # Same token again: answer with what the first call made, as EC2 does.
        query = {"Action": "DescribeInstances", "Version": params.get("Version", "2016-11-15")}
        query.update({f"InstanceId.{n}": iid for n, iid in enumerate(made, 1)})
        body = urlencode(query).encode()
        sub = dict(environ)
        wsgi.set_body(sub, body)
        status, _, described = wsgi.call(self.moto_app, sub)
        if not status.startswith("200"):
            raise RuntimeError(f"DescribeInstances for a repeated ClientToken failed: {status}")
        return wsgi.respond(start_response, "200 OK", _as_run_instances_response(described))

    def _run_instances(self, params: dict[str, str]) -> str | None:
        image_id = params.get("ImageId", "")
        instance_type = params.get("InstanceType", "m1.small")
        self._check_architecture(instance_type, self._image_architecture(image_id))
        if params.get("InstanceMarketOptions.MarketType") == "spot":
            self.spot_behaviour[params.get("ClientToken", "")] = params.get(
                "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior", "terminate"
            )
        return None

    def _modify_instance_attribute(self, params: dict[str, str]) -> str | None:
        new_type = params.get("InstanceType.Value")
        if new_type is None and params.get("Attribute") == "instanceType":
            new_type = params.get("Value")
        if new_type is None:
            return None
        instance_id = params.get("InstanceId", "")
        inst = self._instance(instance_id)
        if inst is None:
            return None
        if inst.state != "stopped":
            raise Ec2Error(
                "IncorrectInstanceState",
                f"The instance '{instance_id}' is not in the 'stopped' state.",
            )
        self._check_architecture(new_type, getattr(inst, "architecture", None))
        return None

    def _get_console_output(self, params: dict[str, str]) -> str | None:
        instance_id = params.get("InstanceId", "")
        inst = self._instance(instance_id)
        if inst is None:
            return None
        host_key = self.host_key_of(instance_id)
        text = ""
        if host_key:
            ip = (getattr(inst, "private_ip", None) or "127.0.0.1").replace(".", "-")
            key = " ".join(host_key.split()[:2])
            text = (
                f"[    0.000000] Linux version 6.8.0-1016-aws (buildd@lcy02-amd64-047)\r\n"
                f"Cloud-init v. 24.4-0ubuntu1~24.04.2 running 'modules:final'.\r\n"
                "-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n"
                "-----END SSH HOST KEY FINGERPRINTS-----\r\n"
                "-----BEGIN SSH HOST KEY KEYS-----\r\n"
                f"{key} root@ip-{ip}\r\n"
                "-----END SSH HOST KEY KEYS-----\r\n"
                "Cloud-init v. 24.4-0ubuntu1~24.04.2 finished.\r\n"
            )
        # Nothing printed yet: EC2 leaves `output` out of the response (GetConsoleOutput,
        # EC2 API reference: "If no console output is available, the output is empty").
        output = f"<output>{base64.b64encode(text.encode()).decode()}</output>" if text else ""
        return (
            f'<GetConsoleOutputResponse xmlns="{EC2_NS}">'
            f"<requestId>{uuid.uuid4()}</requestId>"
            f"<instanceId>{escape(instance_id)}</instanceId>"
            f"<timestamp>{_iso(_now())}</timestamp>"
            f"{output}"
            "</GetConsoleOutputResponse>"
        )

    def _describe_spot_price_history(self, params: dict[str, str]) -> str:
        types = wsgi.numbered(params, "InstanceType")
        azs = [params["AvailabilityZone"]] if params.get("AvailabilityZone") else []
        for name, values in _filters(params).items():
            if name == "instance-type":
                types = types or values
            elif name == "availability-zone":
                azs = azs or values
        if not types:
            types = sorted(_list_prices())
        if not azs:
            backend = self.ec2_backend()
            azs = [z.name for z in backend.describe_availability_zones()]
        end = _parse_time(params["EndTime"]) if params.get("EndTime") else _now()
        start = _parse_time(params["StartTime"]) if params.get("StartTime") else end
        rows: list[tuple[datetime, str, str, float]] = []
        for itype in types:
            for az in azs:
                points = sorted(_spot_history(itype, az, start - timedelta(hours=1), end))
                # EC2 returns the price in effect at StartTime, then every change after it.
                before = [p for p in points if p[0] <= start]
                after = [p for p in points if start < p[0] <= end]
                for at, price in before[-1:] + after:
                    rows.append((at, itype, az, price))
        rows.sort(key=lambda r: r[0], reverse=True)
        offset = int(params.get("NextToken") or 0)
        limit = int(params.get("MaxResults") or 1000)
        page = rows[offset : offset + limit]
        next_token = str(offset + limit) if offset + limit < len(rows) else ""
        items = "".join(
            "<item>"
            f"<instanceType>{escape(itype)}</instanceType>"
            "<productDescription>Linux/UNIX</productDescription>"
            f"<spotPrice>{price:.6f}</spotPrice>"
            f"<timestamp>{_iso(at)}</timestamp>"
            f"<availabilityZone>{escape(az)}</availabilityZone>"
            "</item>"
            for at, itype, az, price in page
        )
        return (
            f'<DescribeSpotPriceHistoryResponse xmlns="{EC2_NS}">'
            f"<requestId>{uuid.uuid4()}</requestId>"
            f"<spotPriceHistorySet>{items}</spotPriceHistorySet>"
            f"<nextToken>{next_token}</nextToken>"
            "</DescribeSpotPriceHistoryResponse>"
        )


def _filters(params: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    n = 1
    while f"Filter.{n}.Name" in params:
        out[params[f"Filter.{n}.Name"]] = wsgi.numbered(params, f"Filter.{n}.Value")
        n += 1
    return out


def _list_prices() -> dict[str, float]:
    try:
        from cloudsh.sandbox import prices
    except ImportError:
        return {}
    return dict(getattr(prices, "LIST_PRICES", {}))


def _spot_history(instance_type: str, az: str, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """Hourly spot prices from the sandbox price source; empty if it has none for this type."""
    try:
        from cloudsh.sandbox import prices
    except ImportError:
        return []
    history = getattr(prices, "spot_price_history", None)
    if history is None:
        return []
    try:
        return list(history(instance_type, az, start, end))
    except (KeyError, ValueError):
        return []


def _as_run_instances_response(describe_xml: bytes) -> str:
    """A DescribeInstances answer for one reservation, reshaped as RunInstances returns it."""
    root = ElementTree.fromstring(describe_xml)
    item = next(
        (el for el in root.iter() if _local(el.tag) == "item" and any(
            _local(c.tag) == "instancesSet" for c in el)),
        None,
    )
    parts = [f'<RunInstancesResponse xmlns="{EC2_NS}"><requestId>{uuid.uuid4()}</requestId>']
    for child in list(item) if item is not None else []:
        for el in child.iter():
            el.tag = _local(el.tag)
        parts.append(ElementTree.tostring(child, encoding="unicode"))
    parts.append("</RunInstancesResponse>")
    return "".join(parts)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
