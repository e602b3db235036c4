"""What this machine remembers for a minute about reaching boxes, so that `ssh NAME`
through `ssh-config`'s `ProxyCommand` (`cloudsh.proxy`) asks the cloud nothing:

- `Addresses`, `<cache>/ssh-addresses.json`: instance id -> where its SSH server answered
  (address and port). Written by every listing, launch, start and connection, and by the
  proxy itself; dropped when cloudsh stops or terminates the box.
- `AllowedChecks`, `<cache>/ssh-allowed.json`: instance id -> the public address of this
  machine that its security groups were last found to let in (`reach.allow_this_machine`).

Both are caches: the cloud stays the source of truth, and an entry older than `TTL_S` is
not used. The proxy's warm path imports this module before anything else of cloudsh, and
pays for every import on every `ssh`: `os`, `time` and json's C scanner only (no `json`,
pathlib, typing or contextlib; `bench/proxy_bench.py`).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

#: How long a remembered address or firewall check is trusted without asking EC2.
TTL_S = 60.0


class _Plain:
    """What json's C scanner asks of its decoder: plain values, as `json.loads` makes."""

    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int, parse_constant = float, int, float


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON document in `path` (None if unreadable), read by `json`'s own C scanner:
    importing `json` compiles its regular expressions, a third of the proxy's warm path."""
    import _json

    try:
        with open(path) as f:
            text = f.read().strip()
        return _json.make_scanner(_Plain)(text, 0)[0]  # type: ignore[arg-type]  # (typeshed: any object with these fields)
    except (OSError, ValueError, StopIteration):
        return None


class _Cache:
    """A small JSON object in the cache dir: id -> {..., "at": epoch seconds}, rewritten
    atomically; entries older than `TTL_S` are dropped on each write."""

    name = ""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.path = os.path.join(cache_dir, self.name)

    def _read(self) -> dict[str, Any]:
        data = read_json(self.path)
        return data if isinstance(data, dict) else {}

    def _fresh(self, key: str) -> dict[str, Any] | None:
        seen = self._read().get(key)
        if not isinstance(seen, dict):
            return None
        try:
            return seen if 0 <= time.time() - float(seen["at"]) < TTL_S else None
        except (TypeError, KeyError, ValueError):
            return None

    def _update(self, put: dict[str, dict[str, Any]], drop: Iterable[str] = ()) -> None:
        import json

        now = time.time()
        gone = set(drop)
        data = {
            k: v for k, v in self._read().items()
            if k not in gone and isinstance(v, dict) and isinstance(v.get("at"), float | int) and now - v["at"] < TTL_S
        }
        data.update({k: {**v, "at": now} for k, v in put.items()})
        folder, name = os.path.split(self.path)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError:
            pass


class AllowedChecks(_Cache):
    """Instance id -> the address last found allowed by its groups, and when."""

    name = "ssh-allowed.json"

    def fresh(self, instance_id: str, address: str) -> bool:
        seen = self._fresh(instance_id)
        return seen is not None and seen.get("address") == address

    def ok(self, instance_id: str, address: str) -> None:
        self._update({instance_id: {"address": address}})


class Addresses(_Cache):
    """Instance id -> the address and port its SSH server answers on."""

    name = "ssh-addresses.json"

    def recall(self, instance_id: str) -> tuple[str, int] | None:
        seen = self._fresh(instance_id)
        try:
            return (str(seen["address"]), int(seen["port"])) if seen else None
        except (KeyError, TypeError, ValueError):
            return None

    def remember(self, found: dict[str, tuple[str, int]], *, forget: Iterable[str] = ()) -> None:
        """Remember where boxes answer (id -> (address, port)) and forget others."""
        self._update({k: {"address": a, "port": p} for k, (a, p) in found.items()}, forget)

    def forget(self, instance_ids: Iterable[str]) -> None:
        self._update({}, instance_ids)
