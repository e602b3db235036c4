"""The blocking paramiko `SSHClient` that the Python API hands to users' own scripts.

Configured from the same resolution as everything else: the box's pinned host keys
(never anything else: `RejectPolicy`), cloudsh's key only (no agent, no ~/.ssh lookups).
paramiko costs ~100 ms to import, so it is imported only when a client is asked for.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from cloudsh.config import Settings
from cloudsh.errors import HostKeyChanged, SSHError
from cloudsh.models import HostInfo
from cloudsh.services.known_hosts import KnownHosts, fingerprint

if TYPE_CHECKING:
    import paramiko


def paramiko_client(host: HostInfo, settings: Settings) -> paramiko.SSHClient:
    """A connected `paramiko.SSHClient` to the box; the caller closes it.

    Raises `SSHError` if nothing is pinned for the box yet (connect once with cloudsh
    first: `SSHService.ensure_pinned`), `HostKeyChanged` if the box presents another key.
    """
    import paramiko

    pinned = KnownHosts(settings.known_hosts_path).keys(host.host_key_alias)
    if not pinned:
        raise SSHError(
            f"no host key is pinned for {host.name} yet",
            f"connect once with cloudsh first, e.g. `cloudsh run {host.name} -- true`",
        )
    client = paramiko.SSHClient()
    # The name paramiko looks the server up under.
    lookup = host.host if host.port == 22 else f"[{host.host}]:{host.port}"
    store = client.get_host_keys()
    for line in pinned:
        kind, blob = line.split()[:2]
        try:
            store.add(lookup, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
        except (paramiko.SSHException, ValueError):
            continue  # a key type this paramiko cannot load: the others still pin the box
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    timeout = settings.ssh_connect_timeout_s
    try:
        client.connect(
            host.host,
            port=host.port,
            username=host.user,
            key_filename=host.key_path,
            allow_agent=False,
            look_for_keys=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        presented = f"{exc.key.get_name()} {exc.key.get_base64()}"
        raise HostKeyChanged(
            f"host key of box {host.name} has CHANGED: pinned "
            f"{', '.join(fingerprint(k) for k in pinned)}, presented {fingerprint(presented)}",
            f"if {host.name} was rebuilt, run `cloudsh known-hosts forget {host.name}`; "
            "otherwise do not connect: someone may be intercepting the connection",
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise SSHError(
            f"box {host.name} at {host.host}:{host.port} refused cloudsh's key {host.key_path} for user {host.user}",
            "was it launched with cloudsh's key pair? Otherwise check the user name setting",
        ) from None
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        why = str(exc) or type(exc).__name__
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused"
        raise SSHError(
            f"cannot reach box {host.name} at {host.host}:{host.port}: {why.rstrip('.').lower()}",
            "it may still be booting: wait, or check `cloudsh ls`",
        ) from None
    return client
