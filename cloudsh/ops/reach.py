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
from cloudsh.ops.events import Progress, quiet

#: How often a first connection looks at the console for the host keys.
CONSOLE_POLL_S = 1.0

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
    progress: Progress = quiet,
) -> HostInfo:
    """How to reach a running box over SSH, its host key pinned; else why not, and the fix."""
    if inst.state != "running":
        stopped = inst.state in ("stopped", "stopping")
        hint = (stopped_hint or f"start it with `cloudsh start {inst.label}`") if stopped else other_hint
        raise InvalidState(f"{inst.label} is {inst.state}, not running", hint)
    host = await check_against_console(backend, inst, await host_for(backend, inst), progress)
    await backend.ssh.ensure_pinned(host)
    return host


async def wait_ssh(
    backend: Backend, inst: Instance, *, timeout: float | None = None, progress: Progress = quiet
) -> HostInfo:
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
    host = await check_against_console(backend, inst, host, progress)
    await backend.ssh.ensure_pinned(host)
    return host


async def check_against_console(backend: Backend, inst: Instance, host: HostInfo, progress: Progress) -> HostInfo:
    """On first contact (no key pinned for the box), the host keys cloud-init prints to the
    console become the keys the connection is checked against. The console can lag the box
    by minutes ("Instance console output", EC2 user guide), so it is polled until
    `console_wait_s`; past that, the first key shown is trusted and pinned, and we say so."""
    if host.expected_host_keys or backend.ssh.known_hosts.keys(host.host_key_alias):
        return host
    loop = asyncio.get_running_loop()
    deadline = loop.time() + backend.settings.console_wait_s
    while True:
        try:
            keys = backend.hosts.learn_console_output(inst.id, await backend.ec2.console_output(inst.id))
        except CloudshError as exc:
            # No console access (say, a policy without ec2:GetConsoleOutput): waiting won't help.
            progress(f"{inst.label}: cannot read its console ({exc.message}): trusting the first key and pinning it")
            return host
        if keys:
            return dataclasses.replace(host, expected_host_keys=keys)
        if loop.time() + CONSOLE_POLL_S > deadline:
            progress(f"{inst.label}: no host key in the console yet: trusting the first key and pinning it")
            return host
        await asyncio.sleep(CONSOLE_POLL_S)
