"""OpenSSH, pointed at cloudsh's pins: `ssh` argv for `connect`, `Host` blocks with the
box's address for rsync of job results (`ssh_config_block`), and for `ssh-config`, scp and
editors blocks that find the box through a `ProxyCommand` (`proxy_config_block`).

All check a box's key against cloudsh's own known_hosts file with `HostKeyAlias`
(the instance id), so OpenSSH and cloudsh's asyncssh engine agree on what a box's
key is. No asyncssh import: these only build text.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from cloudsh.config import Settings
from cloudsh.models import HostInfo

#: Seconds between keepalives; 3 unanswered ones drop the connection (like OpenSSH's
#: ServerAliveInterval/CountMax), so a dead pooled connection is noticed and replaced.
KEEPALIVE_S = 15.0
KEEPALIVE_COUNT = 3


def _openssh_options(host: HostInfo, settings: Settings) -> list[tuple[str, str]]:
    connect = f"{max(1, round(settings.ssh_connect_timeout_s))}"
    return [*_pinned_options(host.key_path, host.host_key_alias, settings), ("ConnectTimeout", connect)]


def _pinned_options(key_path: str, alias: str, settings: Settings) -> list[tuple[str, str]]:
    return [
        ("IdentityFile", key_path),
        ("IdentitiesOnly", "yes"),
        ("HostKeyAlias", alias),
        ("UserKnownHostsFile", str(settings.known_hosts_path)),
        ("GlobalKnownHostsFile", "/dev/null"),
        ("StrictHostKeyChecking", "yes"),
        # Keep OpenSSH from rewriting cloudsh's pins behind its back.
        ("UpdateHostKeys", "no"),
        ("CheckHostIP", "no"),
        ("ServerAliveInterval", f"{KEEPALIVE_S:g}"),
        ("ServerAliveCountMax", str(KEEPALIVE_COUNT)),
    ]


def openssh_args(
    host: HostInfo,
    settings: Settings,
    *,
    forwards: Sequence[tuple[int, int]] = (),
    command: Sequence[str] | None = None,
    tty: bool = False,
) -> list[str]:
    """argv for OpenSSH `ssh` to the box, checking its key against cloudsh's pins.

    Call `SSHService.ensure_pinned` first: with nothing pinned OpenSSH refuses.
    """
    args = ["ssh", "-p", str(host.port), "-l", host.user, "-i", host.key_path]
    for name, value in _openssh_options(host, settings):
        args += ["-o", f"{name}={value}"]
    if forwards:
        args += ["-o", "ExitOnForwardFailure=yes"]
    for local_port, remote_port in forwards:
        args += ["-L", f"127.0.0.1:{local_port}:localhost:{remote_port}"]
    if tty:
        args.append("-t")
    args.append(host.host)
    if command:
        args.extend(command)
    return args


def _config_value(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def ssh_config_block(name: str, host: HostInfo, settings: Settings) -> str:
    """One `Host NAME` block for `ssh -F FILE NAME`, scp, rsync and VS Code Remote-SSH."""
    alias = "-".join(name.split()) or host.host_key_alias
    lines = [
        f"Host {alias}",
        f"    HostName {host.host}",
        f"    Port {host.port}",
        f"    User {_config_value(host.user)}",
    ]
    lines += [f"    {k} {_config_value(v)}" for k, v in _openssh_options(host, settings)]
    return "\n".join(lines) + "\n"


def proxy_config_block(name: str, instance_id: str, proxy_command: Sequence[str], settings: Settings) -> str:
    """One `Host NAME` block for `ssh-config`: no address in it, `proxy_command` (argv)
    finds the box wherever it answers now (`cloudsh.proxy`); its key is checked against
    the box's pin (`HostKeyAlias`, the instance id) as in `ssh_config_block`. No
    `ConnectTimeout`: with a `ProxyCommand` OpenSSH would apply it to the wait for the
    banner, which a box being woken up outlasts; the proxy bounds its own waits."""
    alias = "-".join(name.split()) or instance_id
    # OpenSSH hands the rest of the line to the shell after expanding `%` tokens.
    command = " ".join(shlex.quote(word) for word in proxy_command).replace("%", "%%")
    lines = [f"Host {alias}", f"    User {_config_value(settings.ssh_user)}", f"    ProxyCommand {command}"]
    lines += [f"    {k} {_config_value(v)}" for k, v in _pinned_options(str(settings.key_path), instance_id, settings)]
    return "\n".join(lines) + "\n"
