"""The security group as a firewall in front of each box's SSH server.

On EC2 a packet from an address that no inbound rule of the instance's security groups
allows is dropped: the client sees no answer at all until its connect timeout fires
("Security group rules", Amazon EC2 User Guide:
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/security-group-rules.html).
Every sandbox client comes from 127.0.0.1, so the sandbox plays the machine's public
address instead: the *simulated address* (default 127.0.0.1), set with
`cloudsh sandbox address A.B.C.D` (`POST /_sandbox/address` on the daemon's control
endpoint, `imds.py`) and published in `state.json` as `public_address`.

A box's SSH server listens through a `Gate` (an asyncssh listener "tunnel"). For each
TCP connection it reads the box's groups and their rules from moto's EC2 backend; if an
inbound rule covers the simulated address on TCP port 22, asyncssh gets the connection,
else it is held open without a byte (no SSH banner) and closed after `HOLD_S`, so the
client's own connect timeout fires, as on EC2.

A group has at most 60 inbound rules: moto refuses the 61st with EC2's
`RulesPerSecurityGroupLimitExceeded`, "The maximum number of rules per security group
has been reached." ("Amazon VPC quotas", Security groups:
https://docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html; error code
listed in "Error codes for the Amazon EC2 API":
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from cloudsh.config import Settings
from cloudsh.sandbox.state import read_state

log = logging.getLogger("cloudsh.sandbox.firewall")

DEFAULT_ADDRESS = "127.0.0.1"
SSH_PORT = 22
#: How long a refused connection is held before it is closed (EC2 would never answer).
HOLD_S = 120.0
CONTROL_PATH = "/_sandbox/address"


def parse_address(text: str) -> str:
    """A dotted IPv4 address, normalised; ValueError if `text` is not one."""
    return str(ipaddress.IPv4Address(text.strip()))


def simulated_address(settings: Settings) -> str:
    """This machine's public address as the sandbox plays it (what checkip would say)."""
    state = read_state(settings.sandbox_path)
    return state.public_address if state is not None else DEFAULT_ADDRESS


class Firewall:
    """The daemon's view: the simulated address and whether a box's groups let it in."""

    def __init__(self, ec2_backends: Callable[[], list[Any]], on_change: Callable[[], None]) -> None:
        self.ec2_backends = ec2_backends  # every region's: a box may be in any
        self.on_change = on_change
        self.address = DEFAULT_ADDRESS

    def admits(self, instance_id: str) -> bool:
        """Whether an inbound rule of the box's groups covers the address on TCP 22."""
        address = ipaddress.IPv4Address(self.address)
        for _ in range(3):  # moto's request threads change rules while this reads them
            try:
                inst = next(filter(None, (b.get_instance_by_id(instance_id) for b in self.ec2_backends())), None)
                if inst is None:
                    return False  # gone from moto: nothing lets it in
                return any(_covers(rule, address) for g in list(inst.security_groups) for rule in list(g.ingress_rules))
            except RuntimeError:
                continue
        return False

    def control(self, method: str, body: bytes) -> tuple[int, str]:
        """`GET` answers the simulated address, `POST {"address": "A.B.C.D"}` sets it."""
        if method == "POST":
            try:
                self.address = parse_address(str(json.loads(body or b"{}")["address"]))
            except (ValueError, KeyError, TypeError):
                return 400, 'expected {"address": "A.B.C.D"} (an IPv4 address)'
            log.info("simulated public address is now %s", self.address)
            self.on_change()
        elif method != "GET":
            return 405, "Method Not Allowed"
        return 200, json.dumps({"address": self.address})


def _covers(rule: Any, address: ipaddress.IPv4Address) -> bool:
    if rule.ip_protocol not in ("tcp", "-1"):
        return False
    if rule.ip_protocol == "tcp" and not (rule.from_port or 0) <= SSH_PORT <= (rule.to_port or 0):
        return False
    cidr = rule.ip_range.get("CidrIp") if rule.ip_range else None
    return bool(cidr) and address in ipaddress.IPv4Network(cidr, strict=False)


#: The daemon's firewall; without one (a box served outside the daemon) all may connect.
_firewall: Firewall | None = None


def install(firewall: Firewall | None) -> None:
    global _firewall
    _firewall = firewall


class Gate:
    """An asyncssh listener "tunnel": plain TCP on host:port, each connection handed to
    asyncssh only if the firewall admits it."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    async def create_server(self, session_factory: Callable[[str, int], Any], host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: _Door(self.instance_id, session_factory), host, port)


class _Door(asyncio.Protocol):
    def __init__(self, instance_id: str, session_factory: Callable[[str, int], Any]) -> None:
        self.instance_id = instance_id
        self.session_factory = session_factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if _firewall is None or _firewall.admits(self.instance_id):
            conn = self.session_factory("", 0)
            transport.set_protocol(conn)
            conn.connection_made(transport)
            return
        log.info("%s: SSH from %s dropped (no rule of its groups covers it)", self.instance_id, _firewall.address)
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()
        asyncio.get_running_loop().call_later(HOLD_S, transport.close)


class SandboxAddress:
    """The `AddressSource` of the sandbox: the simulated address the daemon publishes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def current(self, *, fresh: bool = False) -> str:
        return simulated_address(self.settings)
