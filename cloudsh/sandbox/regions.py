"""The regions the sandbox serves, and which one each request is for.

The sandbox plays the regions EC2 enables in every account (those launched before March
2019; later ones are opt-in, "Specify which AWS Regions your account can use",
https://docs.aws.amazon.com/accounts/latest/reference/manage-acct-regions.html), as an
account that opted in to none: DescribeRegions lists them, and with `AllRegions` lists
the others as `not-opted-in`. Each is moto's own
backend for that region (its own AZs, boxes, volumes, images, key pairs and groups), with
its own list prices and quotas. A request names its region the way it does on AWS, in
the credential scope of its SigV4 signature (`Credential=KEY/DATE/REGION/SERVICE/...`);
`RegionLayer` reads it, refuses a region the sandbox does not serve as EC2 refuses a
signature scoped to an unknown one, and lets the layers behind it find that region's
backend through `current()`.

Stdlib only: `cloudsh.root` reads `SERVED` before anything starts.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT = "us-east-1"

#: Sandbox list prices: us-east-1's on-demand list (`prices.LIST_PRICES`) times the
#: region's factor, the ratio of the region's published Linux on-demand m5.large price to
#: us-east-1's ($0.096/h), as on "Amazon EC2 On-Demand Pricing"
#: (https://aws.amazon.com/ec2/pricing/on-demand/), read 2025-05-01. Real regional prices
#: differ by type a little more than one factor says; these are the sandbox's list, not AWS's.
PRICE_FACTORS: dict[str, float] = {
    "us-east-1": 1.0,          # $0.096
    "us-east-2": 1.0,          # $0.096
    "us-west-1": 1.1667,       # $0.112
    "us-west-2": 1.0,          # $0.096
    "ca-central-1": 1.1146,    # $0.107
    "sa-east-1": 1.5938,       # $0.153
    "eu-west-1": 1.1146,       # $0.107
    "eu-west-2": 1.1563,       # $0.111
    "eu-west-3": 1.1667,       # $0.112
    "eu-central-1": 1.1979,    # $0.115
    "eu-north-1": 1.0625,      # $0.102
    "ap-northeast-1": 1.2917,  # $0.124
    "ap-northeast-2": 1.2292,  # $0.118
    "ap-northeast-3": 1.2917,  # $0.124
    "ap-southeast-1": 1.25,    # $0.120
    "ap-southeast-2": 1.25,    # $0.120
    "ap-south-1": 1.0521,      # $0.101
}

#: The regions the sandbox serves: those enabled by default.
SERVED = frozenset(PRICE_FACTORS)

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/")
_local = threading.local()


def served_hint() -> str:
    return "the sandbox serves " + ", ".join(sorted(SERVED))


def of_az(az: str) -> str:
    """The region of an availability zone name (`eu-west-1b` -> `eu-west-1`)."""
    return az[:-1] if az[-1:].isalpha() else az


def price_factor(region: str) -> float:
    return PRICE_FACTORS.get(region, 1.0)


def of_request(environ: dict[str, Any]) -> str:
    """The region a request is signed for (us-east-1 when it is not signed)."""
    found = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return found.group(1) if found else DEFAULT


def current() -> str:
    """The region of the request this thread serves (us-east-1 outside a request)."""
    return getattr(_local, "region", DEFAULT)


class RegionLayer:
    """Outermost WSGI layer: the request's region, refused if not served, and remembered
    for this thread. `on_first_use(region)` runs once per region before its first request;
    `on_change()` runs after each request that may have changed the cloud; `last_request`
    is when the last request ended (time.monotonic()), so work can wait for a quiet moment."""

    def __init__(
        self,
        app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]],
        on_first_use: Callable[[str], None],
        on_change: Callable[[], None],
    ) -> None:
        self.app = app
        self.on_first_use = on_first_use
        self.on_change = on_change
        self._ready: set[str] = set()
        self.last_request = 0.0
        self._lock = threading.Lock()

    def prepare(self, region: str) -> None:
        with self._lock:
            if region not in self._ready:
                self.on_first_use(region)
                self._ready.add(region)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        from cloudsh.sandbox import wsgi

        region = of_request(environ)
        if region not in SERVED:
            # EC2 answers a signature scoped to a region it does not know with AuthFailure.
            return wsgi.respond(
                start_response, "401 Unauthorized", wsgi.error_xml(
                    "AuthFailure", f"Credential should be scoped to a valid region, not '{region}' ({served_hint()})."
                ),
            )
        self.prepare(region)
        mutates = _mutates(environ)
        _local.region = region
        try:
            if wsgi.params(environ).get("Action") == "DescribeRegions":
                return _describe_regions(self.app, environ, start_response)
            body = list(self.app(environ, start_response))
        finally:
            _local.region = DEFAULT
            self.last_request = time.monotonic()
        if mutates:
            self.on_change()
        return body


def _describe_regions(
    app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]],
    environ: dict[str, Any],
    start_response: Callable[..., Any],
) -> Iterable[bytes]:
    """moto's answer, with the regions not served left out, or with `AllRegions` marked
    `not-opted-in` (moto says every region needs no opt-in)."""
    from xml.etree import ElementTree

    from cloudsh.sandbox import wsgi

    everything = wsgi.params(environ).get("AllRegions", "").lower() == "true"
    status, headers, body = wsgi.call(app, environ)
    if status.startswith("200"):
        root = ElementTree.fromstring(body)
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        if ns:
            ElementTree.register_namespace("", ns[1:-1])
        for group in root.iter(f"{ns}regionInfo"):
            for item in list(group):
                if item.findtext(f"{ns}regionName") in SERVED:
                    continue
                status_el = item.find(f"{ns}optInStatus")
                if not everything:
                    group.remove(item)
                elif status_el is not None:
                    status_el.text = "not-opted-in"
        body = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]


def _mutates(environ: dict[str, Any]) -> bool:
    """Whether a request may have changed the cloud: anything but a read."""
    from cloudsh.sandbox import wsgi

    if environ.get("PATH_INFO", "").startswith("/moto-api"):
        return False
    action = wsgi.params(environ).get("Action", "") or environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2]
    return not action.startswith(("Describe", "Get", "List"))
