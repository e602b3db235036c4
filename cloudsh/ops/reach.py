"""Reaching a box: its security group kept open to this machine's current address (SSH
follows the laptop), and how to reach a running box over SSH with its host key checked
and pinned. Every workflow and front end that talks to a box goes through here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudsh.errors import AWSError, CloudshError, InvalidState
from cloudsh.models import SSH_RULE_DESCRIPTION, HostInfo, Instance, SshRule
from cloudsh.services.keys import ensure_key, key_pair_name

if TYPE_CHECKING:
    # boto3 underneath: for types only, so the app paints before it loads
    from cloudsh.services.backend import Backend


#: How long a check that found SSH allowed from this machine is trusted without asking EC2.
CHECK_TTL_S = 60.0


async def allow_this_machine(backend: Backend, inst: Instance, *, fresh: bool = False) -> bool:
    """Let this machine's current public address reach the box's SSH, as the laptop moves.

    If no inbound rule of the box's groups covers the address, add its /32 (marked as
    this machine's) and revoke the /32s it added before, never the user's own rules, and
    say so in one line. A check that found all well is trusted for `CHECK_TTL_S` (no
    DescribeSecurityGroups); `fresh` (after a connection timed out) asks again. Returns
    True if a rule was added.
    """
    address = await backend.address.current(fresh=fresh)
    checks = _Checks(backend.settings.cache_dir)
    if not fresh and checks.fresh(inst.id, address):
        return False
    groups = inst.security_groups or (await backend.ec2.get_instance(inst.id)).security_groups
    if not groups:
        return False
    rules = await backend.ec2.ssh_rules(groups)
    if not covers(rules, address):
        ours = [r.group_id for r in rules if r.description.startswith(SSH_RULE_DESCRIPTION)]
        group = next((g for g in groups if g in ours), groups[0])
        backend.tell(await open_ssh(backend, group, address, [r for r in rules if r.group_id == group]))
        checks.ok(inst.id, address)
        return True
    checks.ok(inst.id, address)
    return False


async def open_ssh(backend: Backend, group_id: str, address: str, rules: Sequence[SshRule]) -> str:
    """Allow `address`/32 on TCP 22 in the group, first revoking the /32s cloudsh added
    there before (so they never pile up towards EC2's 60 rules); one line saying so."""
    cidr = f"{address}/32"
    mine = rule_description(backend)
    old = [
        r.cidr for r in rules
        if r.exact and r.description in (mine, SSH_RULE_DESCRIPTION) and r.cidr.endswith("/32") and r.cidr != cidr
    ]
    if old:
        await backend.ec2.revoke_ssh(group_id, old)
    try:
        await backend.ec2.allow_ssh(group_id, cidr, mine)
    except AWSError as exc:
        if exc.code != "RulesPerSecurityGroupLimitExceeded":
            raise
        raise CloudshError(
            f"cannot allow SSH from {address}: security group {group_id} has the most inbound rules EC2 allows",
            f"remove rules you no longer need (`aws ec2 describe-security-groups --group-ids {group_id}`)",
        ) from None
    line = f"SSH now allowed from {address} ({group_id})"
    if old:
        gone = ", ".join(c.removesuffix("/32") for c in old)
        line += f"; removed cloudsh's old rule{'s' if len(old) > 1 else ''} for {gone}"
    return line


def rule_description(backend: Backend) -> str:
    """How this machine's rules are marked: by its key pair (see `SSH_RULE_DESCRIPTION`)."""
    settings = backend.settings
    return f"{SSH_RULE_DESCRIPTION} ({key_pair_name(settings.key_name, ensure_key(settings.key_path))})"


def mark_allowed(backend: Backend, instance_id: str, address: str) -> None:
    """Remember that the box's groups let `address` in (launch just made sure of it)."""
    _Checks(backend.settings.cache_dir).ok(instance_id, address)


async def recheck_after_timeout(backend: Backend, host: HostInfo) -> bool:
    """An SSH connection timed out: True if the firewall explained it and is now fixed."""
    try:
        inst = await backend.ec2.get_instance(host.instance_id)
        return await allow_this_machine(backend, inst, fresh=True)
    except CloudshError:
        return False  # the timeout's own message says more than this would


def covers(rules: Sequence[SshRule], address: str) -> bool:
    """Whether one of the rules lets `address` in."""
    here = ipaddress.IPv4Address(address)
    for rule in rules:
        with contextlib.suppress(ValueError):
            if here in ipaddress.IPv4Network(rule.cidr, strict=False):
                return True
    return False


class _Checks:
    """`<cache>/ssh-allowed.json`: instance id -> the address last found allowed, and when."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "ssh-allowed.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def fresh(self, instance_id: str, address: str) -> bool:
        seen = self._read().get(instance_id)
        if not isinstance(seen, dict):
            return False
        try:
            return bool(seen["address"] == address and 0 <= time.time() - float(seen["at"]) < CHECK_TTL_S)
        except (TypeError, KeyError, ValueError):
            return False

    def ok(self, instance_id: str, address: str) -> None:
        now = time.time()
        data = {
            k: v for k, v in self._read().items()
            if isinstance(v, dict) and isinstance(v.get("at"), float | int) and now - v["at"] < CHECK_TTL_S
        }
        data[instance_id] = {"address": address, "at": now}
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)


async def host_for(backend: Backend, inst: Instance) -> HostInfo:
    """How to reach a running instance over SSH, or a clear error saying why not."""
    await allow_this_machine(backend, inst)
    host = backend.hosts.resolve(inst)
    if host is None:
        raise InvalidState(
            f"{inst.label} is running but does not answer SSH yet",
            "it is probably still booting: wait a moment and try again",
        )
    return host


async def ssh_host(
    backend: Backend,
    inst: Instance,
    *,
    stopped_hint: str | None = None,
    other_hint: str = "check `cloudsh ls --all`",
) -> HostInfo:
    """How to reach a running box over SSH, its host key pinned; else why not, and the fix."""
    if inst.state != "running":
        stopped = inst.state in ("stopped", "stopping")
        hint = (stopped_hint or f"start it with `cloudsh start {inst.label}`") if stopped else other_hint
        raise InvalidState(f"{inst.label} is {inst.state}, not running", hint)
    host = await host_for(backend, inst)
    await backend.ssh.ensure_pinned(host)
    return host


async def wait_ssh(backend: Backend, inst: Instance, *, timeout: float | None = None) -> HostInfo:
    """Wait until the instance's SSH server answers, then pin its host key."""

    async def resolve() -> HostInfo | None:
        current = inst
        if backend.sandbox:
            return backend.hosts.resolve(current)
        if not (current.public_ip or current.private_ip):
            found = await backend.ec2.list_instances(ids=[inst.id])
            current = found[0] if found else inst
        return backend.hosts.resolve(current)

    await allow_this_machine(backend, inst)
    host = await backend.ssh.wait_ready(resolve, timeout=timeout or backend.settings.wait_timeout_s)
    learn = getattr(backend.hosts, "learn_console_output", None)
    if learn is not None and not host.expected_host_keys and not backend.ssh.known_hosts.keys(host.host_key_alias):
        # First contact on AWS: check the key against what cloud-init printed to the
        # console, when it has printed it (else trust on first use, and pin).
        try:
            keys = learn(inst.id, await backend.ec2.console_output(inst.id))
            if keys:
                host = dataclasses.replace(host, expected_host_keys=tuple(keys))
        except CloudshError:
            pass  # no console access: fall back to trust on first use
    await backend.ssh.ensure_pinned(host)
    return host
