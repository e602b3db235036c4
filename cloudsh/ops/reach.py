"""Reaching a box: the address SSH is opened to, and how to reach a running box over SSH
with its host key checked and pinned. Every workflow and front end that talks to a box
goes through here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import TYPE_CHECKING

from cloudsh.errors import CloudshError, HostKeyChanged, InvalidState
from cloudsh.models import HostInfo, Instance
from cloudsh.ops.events import Progress, quiet
from cloudsh.services.known_hosts import fingerprint, forget_hint

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
    host = await host_for(backend, inst)
    console = _console_task(backend, inst, host, until=0.0)
    if console is not None and backend.ssh.known_hosts.keys(host.host_key_alias):
        # Pinned, not yet confirmed: this connection looks at the console once first.
        await asyncio.wait([console])
    return await _pin_checked(backend, inst, host, console, progress)


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

    until = asyncio.get_running_loop().time() + (timeout or backend.settings.wait_timeout_s)
    console = _console_task(backend, inst, None, until=until)
    try:
        host = await backend.ssh.wait_ready(resolve, timeout=timeout or backend.settings.wait_timeout_s)
        return await _pin_checked(backend, inst, host, console, progress)
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
