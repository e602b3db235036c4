"""Reaching a box: its security group kept open to this machine's current address (SSH
follows the laptop), and how to reach a running box over SSH with its host key checked
and pinned. Every workflow and front end that talks to a box goes through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloudsh.errors import AWSError, CloudshError, HostKeyChanged, InvalidState
from cloudsh.models import SSH_RULE_DESCRIPTION, HostInfo, Instance, SshRule
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.whereabouts import Addresses, AllowedChecks
from cloudsh.services.keys import ensure_key, key_pair_name
from cloudsh.services.known_hosts import fingerprint, forget_hint

#: How often a first connection looks at the console for the host keys.
CONSOLE_POLL_S = 1.0

if TYPE_CHECKING:
    # boto3 underneath: for types only, so the app paints before it loads
    from cloudsh.services.backend import Backend


async def allow_this_machine(backend: Backend, inst: Instance, *, fresh: bool = False) -> bool:
    """Let this machine's current public address reach the box's SSH, as the laptop moves.

    If no inbound rule of the box's groups covers the address, add its /32 (marked as
    this machine's) and revoke the /32s it added before, never the user's own rules, and
    say so in one line. A check that found all well is trusted for `whereabouts.TTL_S` (no
    DescribeSecurityGroups); `fresh` (after a connection timed out) asks again. Returns
    True if a rule was added.
    """
    address = await backend.address.current(fresh=fresh)
    checks = AllowedChecks(backend.settings.cache_dir)
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
    AllowedChecks(backend.settings.cache_dir).ok(instance_id, address)


async def recheck_after_timeout(backend: Backend, host: HostInfo) -> bool:
    """An SSH connection timed out: True if the firewall explained it and is now fixed."""
    try:
        inst = await backend.ec2.get_instance(host.instance_id)
        return await allow_this_machine(backend, inst, fresh=True)
    except CloudshError:
        return False  # the timeout's own message says more than this would


def remember(backend: Backend, host: HostInfo) -> HostInfo:
    """Note where the box answered, for `ssh NAME` through `ssh-config` (`whereabouts`)."""
    Addresses(backend.settings.cache_dir).remember({host.instance_id: (host.host, host.port)})
    return host


def covers(rules: Sequence[SshRule], address: str) -> bool:
    """Whether one of the rules lets `address` in."""
    here = ipaddress.IPv4Address(address)
    for rule in rules:
        with contextlib.suppress(ValueError):
            if here in ipaddress.IPv4Network(rule.cidr, strict=False):
                return True
    return False


async def host_for(backend: Backend, inst: Instance) -> HostInfo:
    """How to reach a running instance over SSH, or a clear error saying why not."""
    await allow_this_machine(backend, inst)
    host = backend.hosts.resolve(inst)
    if host is None:
        raise InvalidState(
            f"{inst.label} is running but does not answer SSH yet",
            "it is probably still booting: wait a moment and try again",
        )
    await lend_key(backend, inst, host.user)
    return host


#: Seconds a key sent with EC2 Instance Connect is trusted to still count (EC2 keeps it 60 s).
LENT_FOR_S = 40.0
_lent: dict[tuple[str, str], float] = {}  # (instance id, key pair) -> when it was sent (monotonic)


async def lend_key(backend: Backend, inst: Instance, user: str) -> None:
    """A box launched with another machine's key pair: send this machine's public key with
    EC2 Instance Connect, which the box's SSH server accepts for 60 s (connections opened
    meanwhile stay up). Where that is not allowed, say which private key to copy here."""
    settings = backend.settings
    public = ensure_key(settings.key_path)
    mine = key_pair_name(settings.key_name, public)
    if not inst.key_name or inst.key_name == mine:
        return
    now = time.monotonic()
    if now - _lent.get((inst.id, mine), -LENT_FOR_S) < LENT_FOR_S:
        return
    try:
        await backend.ec2.send_ssh_public_key(inst.id, user, public, inst.az)
    except AWSError as exc:
        if exc.code not in ("AccessDenied", "AccessDeniedException", "AuthException"):
            raise
        raise AWSError(
            f"{inst.label} takes only key pair {inst.key_name}, whose private key is not on this machine, "
            f"and EC2 Instance Connect is not allowed here ({exc.message})",
            f"copy {settings.key_path} from the machine that launched it (its key pair {inst.key_name}) to "
            f"{settings.key_path} here, or ask for the IAM permission ec2-instance-connect:SendSSHPublicKey",
            exc.code,
        ) from None
    _lent[(inst.id, mine)] = now


async def ssh_host(
    backend: Backend,
    inst: Instance,
    *,
    stopped_hint: str | None = None,
    other_hint: str = "check `cloudsh ls --all`",
    progress: Progress = quiet,
) -> HostInfo:
    """How to reach a running box over SSH, its host key pinned; else why not, and the fix."""
    if inst.state != "running":
        stopped = inst.state in ("stopped", "stopping")
        hint = (stopped_hint or f"start it with `cloudsh start {inst.label}`") if stopped else other_hint
        raise InvalidState(f"{inst.label} is {inst.state}, not running", hint)
    host = await host_for(backend, inst)
    console = _console_task(backend, inst, host, until=0.0)
    if console is not None and backend.ssh.known_hosts.keys(host.host_key_alias):
        # Pinned, not yet confirmed: this connection looks at the console once first.
        await asyncio.wait([console])
    return remember(backend, await _pin_checked(backend, inst, host, console, progress))


async def wait_ssh(
    backend: Backend, inst: Instance, *, timeout: float | None = None, progress: Progress = quiet
) -> HostInfo:
    """Wait until the instance's SSH server answers, then pin its host key. The console
    is read meanwhile, never waited for (see `_pin_checked`)."""

    async def resolve() -> HostInfo | None:
        current = inst
        if backend.sandbox:
            return backend.hosts.resolve(current)
        if not (current.public_ip or current.private_ip):
            found = await backend.ec2.list_instances(ids=[inst.id])
            current = found[0] if found else inst
        return backend.hosts.resolve(current)

    await allow_this_machine(backend, inst)
    until = asyncio.get_running_loop().time() + (timeout or backend.settings.wait_timeout_s)
    console = _console_task(backend, inst, None, until=until)
    try:
        host = await backend.ssh.wait_ready(resolve, timeout=timeout or backend.settings.wait_timeout_s)
        return remember(backend, await _pin_checked(backend, inst, host, console, progress))
    finally:
        if console is not None:
            console.cancel()


#: What a console read found: the host keys (maybe none yet), or why it cannot be read.
Shown = tuple[str, ...] | str


def _console_task(
    backend: Backend, inst: Instance, host: HostInfo | None, *, until: float
) -> asyncio.Task[Shown] | None:
    """Read the box's console for the host keys cloud-init prints, until it shows them or
    loop time `until` (one read if past), if its pin is missing or unconfirmed."""
    known = backend.ssh.known_hosts
    alias = host.host_key_alias if host else inst.id
    if known.keys(alias) and known.unconfirmed_since(alias) is None:
        return None

    async def poll() -> Shown:
        loop = asyncio.get_running_loop()
        while True:
            try:
                keys = backend.hosts.learn_console_output(inst.id, await backend.ec2.console_output(inst.id))
            except CloudshError as exc:
                # No console access (say, a policy without ec2:GetConsoleOutput): waiting won't help.
                return f"cannot read its console ({exc.message})"
            if keys or loop.time() + CONSOLE_POLL_S > until:
                return keys
            await asyncio.sleep(CONSOLE_POLL_S)

    return asyncio.create_task(poll())


def _shown(console: asyncio.Task[Shown] | None) -> Shown:
    return console.result() if console is not None and console.done() and not console.cancelled() else ()


async def _pin_checked(
    backend: Backend, inst: Instance, host: HostInfo, console: asyncio.Task[Shown] | None, progress: Progress
) -> HostInfo:
    """Connect and pin the box's key as soon as SSH answers, checked against the keys its
    console showed if it has shown them by then; else pinned as unconfirmed and checked
    at the next connection. The console can lag the box by minutes ("Instance console
    output", EC2 user guide): a key it has not shown within `console_wait_s` of the pin is
    trusted on first use, said once. A console key other than the pinned one is refused."""
    known, alias = backend.ssh.known_hosts, host.host_key_alias
    fresh = not known.keys(alias)
    shown = _shown(console)
    if fresh and isinstance(shown, tuple) and shown:
        host = dataclasses.replace(host, expected_host_keys=shown)
    await backend.ssh.ensure_pinned(host)
    since = known.unconfirmed_since(alias)
    if console is None or since is None:
        return host  # confirmed before, or checked against the console's keys just now
    shown = shown or _shown(console)  # it may have answered during the handshake
    console.cancel()
    pinned = known.keys(alias)
    if isinstance(shown, tuple) and shown:
        if set(pinned) & set(shown):
            known.settle(alias)
            return host
        raise HostKeyChanged(
            f"host key of box {inst.label} is not the one its console shows: "
            f"pinned {', '.join(map(fingerprint, pinned))}, console {', '.join(map(fingerprint, shown))}",
            forget_hint(inst.label),
        )
    why = shown or "its console shows no host key yet"
    key = ", ".join(map(fingerprint, pinned))
    if isinstance(shown, str) or time.time() > since + backend.settings.console_wait_s:
        known.settle(alias, tofu=True)
        progress(f"{inst.label}: {why}: trusting its host key {key} on first use")
    elif fresh:
        progress(f"{inst.label}: {why}: host key {key} pinned unconfirmed, checked at the next connection")
    return host
