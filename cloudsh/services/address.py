"""This machine's public address, as the world (and so a security group) sees it.

On AWS it is what https://checkip.amazonaws.com answers, remembered for a minute in the
cache dir so a burst of commands asks once; the sandbox plays it (`sandbox/firewall.py`).
`cloudsh.root` picks the source.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from pathlib import Path
from typing import Protocol

from cloudsh.errors import CloudshError

CHECKIP_URL = "https://checkip.amazonaws.com"
TTL_S = 60.0


class AddressSource(Protocol):
    async def current(self, *, fresh: bool = False) -> str:
        """The dotted IPv4 address; `fresh` skips any remembered answer."""


class CheckIpAddress:
    """Asks checkip.amazonaws.com (the address AWS sees this machine connect from)."""

    def __init__(self, cache_dir: Path, url: str = CHECKIP_URL) -> None:
        self.path = cache_dir / "public-address.json"
        self.url = url

    def remembered(self) -> str | None:
        """The address asked for less than `TTL_S` ago, or None."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            saved = json.loads(self.path.read_text())
            if 0 <= time.time() - float(saved["at"]) < TTL_S:
                return str(ipaddress.IPv4Address(saved["address"]))
        return None

    async def current(self, *, fresh: bool = False) -> str:
        import asyncio  # not at the top: `ssh NAME` through `ssh-config` reads `remembered` only

        if not fresh and (address := self.remembered()):
            return address
        address = await asyncio.to_thread(self._ask)
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"address": address, "at": time.time()}))
            tmp.replace(self.path)
        return address

    def _ask(self) -> str:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                text = r.read().decode(errors="replace").strip()
        except OSError as exc:
            raise CloudshError(
                f"cannot find this machine's public address to open SSH to ({exc})",
                "check your network connection",
            ) from None
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise CloudshError(f"unexpected public address {text[:40]!r} from {self.url}", "try again") from None
