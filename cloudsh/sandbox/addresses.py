"""Box addresses on this machine's loopback, never someone else's.

moto hands instances public addresses in 54.214.0.0/16, real routable addresses of
strangers: a copied address or any tool that connects by it would send packets off this
machine. The sandbox makes moto's backend hand out loopback addresses instead, so
DescribeInstances names addresses where the box's SSH server really listens:

- public addresses from 127.64.0.0/10, a new one each time a box starts, as on EC2
  without an Elastic IP ("When you stop and start an instance, the public IPv4 address
  is released and a new one is assigned", Amazon EC2 instance IP addressing);
- private addresses from 127.16.0.0/12, kept for the instance's life: the subnet picks
  the address as before and its last three octets move to 127.16+ (172.31.5.10 becomes
  127.31.5.10).

Linux routes all of 127.0.0.0/8 to the loopback device, so each is bindable at once.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from typing import Any

PUBLIC = ipaddress.IPv4Network("127.64.0.0/10")
PRIVATE = ipaddress.IPv4Network("127.16.0.0/12")

_lock = threading.Lock()
_taken: set[str] = set()


def _random_in(net: ipaddress.IPv4Network) -> str:
    while True:
        ip = str(net.network_address + random.randrange(1, net.num_addresses - 1))
        if ip not in _taken and not ip.endswith((".0", ".255")):
            _taken.add(ip)
            return ip


def public_address() -> str:
    """A loopback public address no other box holds (until the process ends)."""
    with _lock:
        return _random_in(PUBLIC)


def private_address(subnet_ip: str) -> str:
    """The loopback private address for the one the subnet picked."""
    octets = [int(o) for o in subnet_ip.split(".")]
    ip = f"127.{16 + octets[1] % 16}.{octets[2]}.{octets[3]}"
    with _lock:
        if ip in _taken:
            return _random_in(PRIVATE)
        _taken.add(ip)
        return ip


def _instance_private_ip(cidr: str | None = None, ipv6: bool = False) -> str:
    """An instance launched without a subnet: an address as if from the default VPC's."""
    return private_address(f"172.31.{random.randrange(256)}.{random.randrange(4, 255)}")


def install() -> None:
    """Make moto's EC2 backend hand out loopback addresses (called once, in the daemon)."""
    from moto.ec2.models import elastic_network_interfaces, instances, subnets

    elastic_network_interfaces.random_public_ip = public_address  # type: ignore[attr-defined]
    instances.random_private_ip = _instance_private_ip  # type: ignore[attr-defined]
    original = subnets.Subnet.get_available_subnet_ip
    if getattr(original, "_loopback", False):
        return

    def get_available_subnet_ip(self: Any, instance: Any) -> str:
        return private_address(original(self, instance))

    get_available_subnet_ip._loopback = True  # type: ignore[attr-defined]
    subnets.Subnet.get_available_subnet_ip = get_available_subnet_ip  # type: ignore[method-assign]
