"""Instance -> where and how to reach it over SSH (`HostInfo`).

A `HostResolver` says where a box answers SSH. AWS boxes are reached at their public
(else private) address on port 22 (`AwsHostResolver`); the sandbox supplies its own
resolver (`cloudsh.sandbox.hosts`). No asyncssh import here: `cloudsh ls` loads this
module.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from cloudsh.config import Settings
from cloudsh.errors import InvalidState
from cloudsh.models import HostInfo, Instance

_KEYS_BLOCK = re.compile(
    r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S
)
#: Console lines carry a prefix such as "ec2: " or a timestamp; the key is what follows.
_KEY_LINE = re.compile(r"((?:ssh|ecdsa|sk)-[\w@.-]+)\s+([A-Za-z0-9+/]+={0,3})")


def parse_console_host_keys(text: str) -> tuple[str, ...]:
    """Host keys from cloud-init's `-----BEGIN SSH HOST KEY KEYS-----` console block.

    Returns `"type base64"` lines (no comments), the last block winning when the console
    shows several boots.
    """
    blocks = _KEYS_BLOCK.findall(text)
    if not blocks:
        return ()
    keys: list[str] = []
    for match in _KEY_LINE.finditer(blocks[-1]):
        key = f"{match.group(1)} {match.group(2)}"
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def check_running(inst: Instance) -> bool:
    """True if running; False if about to be (pending); raises if it will not be."""
    if inst.state == "running":
        return True
    if inst.state == "pending":
        return False
    if inst.state in ("terminated", "shutting-down"):
        raise InvalidState(
            f"{inst.label} is {inst.state}",
            f"launch a new box with `cloudsh launch {inst.label}`",
        )
    raise InvalidState(
        f"{inst.label} is {inst.state}", f"start it with `cloudsh start {inst.label}`"
    )


class HostResolver(Protocol):
    def resolve(self, inst: Instance) -> HostInfo | None:
        """Where to reach `inst` over SSH.

        Returns None while it is running (or pending) but not reachable yet (no address,
        still booting). Raises `InvalidState` when it is not running.
        """
        ...

    def learn_console_output(self, instance_id: str, text: str) -> tuple[str, ...]:
        """Remember the host keys printed in `GetConsoleOutput` text; returns them."""
        ...

    def ssh_ports(self, insts: Sequence[Instance]) -> dict[str, int]:
        """The port each running, reachable box's SSH server answers on (read once for all)."""
        ...



class ConsoleKeys:
    """Host keys that cloud-init printed to a box's console (see `learn_console_output`),
    which `resolve` hands out as the `expected_host_keys` a first connection is checked
    against. Shared by every resolver, so AWS and the sandbox check a first key alike."""

    def __init__(self) -> None:
        self._console_keys: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def learn_console_output(self, instance_id: str, text: str) -> tuple[str, ...]:
        """Remember the host keys printed in `GetConsoleOutput` text; returns them."""
        keys = parse_console_host_keys(text)
        if keys:
            self.learn_host_keys(instance_id, keys)
        return keys

    def learn_host_keys(self, instance_id: str, keys: Iterable[str]) -> None:
        with self._lock:
            self._console_keys[instance_id] = tuple(keys)

    def console_keys(self, instance_id: str) -> tuple[str, ...]:
        with self._lock:
            return self._console_keys.get(instance_id, ())


class AwsHostResolver(ConsoleKeys):
    """Real EC2: public IP, else private IP (VPN / same VPC), port 22."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def ssh_ports(self, insts: Sequence[Instance]) -> dict[str, int]:
        return {i.id: 22 for i in insts if i.state == "running" and (i.public_ip or i.private_ip)}

    def resolve(self, inst: Instance) -> HostInfo | None:
        if not check_running(inst):
            return None
        address = inst.public_ip or inst.private_ip
        if not address:
            return None
        return HostInfo(
            instance_id=inst.id,
            name=inst.label,
            host=address,
            port=22,
            user=self.settings.ssh_user,
            key_path=str(self.settings.key_path),
            host_key_alias=inst.id,
            expected_host_keys=self.console_keys(inst.id),
        )
