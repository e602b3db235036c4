"""Reaching a box: the address SSH is opened to, and how to reach a running box over SSH
with its host key checked and pinned. Every workflow and front end that talks to a box
goes through here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import TYPE_CHECKING

from cloudsh.errors import CloudshError, InvalidState
from cloudsh.models import HostInfo, Instance

if TYPE_CHECKING:
    # boto3 underneath: for types only, so the app paints before it loads
    from cloudsh.services.backend import Backend


async def caller_cidr(backend: Backend) -> str:
    """The address SSH is opened to: this machine's public address (loopback in the sandbox)."""
    if backend.sandbox:
        return "127.0.0.1/32"
    import urllib.request

    def fetch() -> str:
        with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=5) as r:
            return str(r.read().decode().strip())

    try:
        ip = await asyncio.to_thread(fetch)
    except OSError as exc:
        raise CloudshError(
            f"cannot find this machine's public address to open SSH to ({exc})",
            "check your network connection",
        ) from None
    if not re.match(r"^\d{1,3}(\.\d{1,3}){3}$", ip):
        raise CloudshError(f"unexpected public address {ip!r}", "try again")
    return f"{ip}/32"


async def host_for(backend: Backend, inst: Instance) -> HostInfo:
    """How to reach a running instance over SSH, or a clear error saying why not."""
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
