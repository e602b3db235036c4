"""cloudsh's own pinned host keys, in OpenSSH known_hosts format.

One line per key, the host field being the instance id (`HostInfo.host_key_alias`), so
OpenSSH reads the same file with `-o HostKeyAlias=<id> -o UserKnownHostsFile=<file>` and
a box keeps its pin when its address changes. A key pinned before the box's console
confirmed it carries the comment `cloudsh-unconfirmed:<epoch seconds>`; one trusted on
first use because the console never showed a key, `cloudsh-tofu` (OpenSSH ignores
comments). Pure Python: `cloudsh ls` imports this module and must not pay for asyncssh.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def normalize_key(key_line: str) -> str:
    """`"ssh-ed25519 AAAA… comment"` -> `"ssh-ed25519 AAAA…"`; ValueError if it is not a key."""
    parts = key_line.split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key: {key_line!r}")
    try:
        base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not an OpenSSH public key: {key_line!r}") from exc
    return f"{parts[0]} {parts[1]}"


#: Comment on a pinned key that the box's console has not confirmed (yet).
UNCONFIRMED = "cloudsh-unconfirmed"
#: Comment on a pinned key trusted on first use: the console never showed one.
TOFU = "cloudsh-tofu"


def forget_hint(name: str) -> str:
    """What to do when a box presents a key other than the one it should."""
    return (
        f"if {name} was rebuilt, run `cloudsh known-hosts forget {name}`; "
        "otherwise do not connect: someone may be intercepting the connection"
    )


def fingerprint(key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line, as `ssh-keygen -l` prints it."""
    import hashlib  # here, not at the top: `ssh NAME` through `ssh-config` only reads pins

    blob = base64.b64decode(normalize_key(key_line).split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


class KnownHosts:
    """Pinned host keys per alias, in one 0600 file rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text().splitlines()
        except FileNotFoundError:
            return []

    @staticmethod
    def _parse(line: str) -> tuple[list[str], str] | None:
        """(host names, normalized key) of a plain entry; None for comments, markers, junk."""
        entry = KnownHosts._parse_noted(line)
        return entry and entry[:2]

    @staticmethod
    def _parse_noted(line: str) -> tuple[list[str], str, str] | None:
        """(host names, normalized key, comment) of a plain entry."""
        text = line.strip()
        if not text or text.startswith(("#", "@")):
            return None
        parts = text.split()
        if len(parts) < 3:
            return None
        try:
            return parts[0].split(","), normalize_key(" ".join(parts[1:3])), " ".join(parts[3:])
        except ValueError:
            return None

    def keys(self, alias: str) -> list[str]:
        """Pinned keys of `alias` (`"type base64"`), in file order."""
        out: list[str] = []
        for line in self._lines():
            entry = self._parse(line)
            if entry and alias in entry[0] and entry[1] not in out:
                out.append(entry[1])
        return out

    def pin(self, alias: str, key_line: str, *, unconfirmed: bool = False) -> None:
        """Add `key_line` for `alias` (no-op if already pinned); `unconfirmed`: the box's
        console has not shown it yet (see `unconfirmed_since`)."""
        key = normalize_key(key_line)
        note = f" {UNCONFIRMED}:{int(time.time())}" if unconfirmed else ""
        with self._locked():
            if key not in self.keys(alias):
                self._write([*self._lines(), f"{alias} {key}{note}"])

    def unconfirmed_since(self, alias: str) -> float | None:
        """When the key of `alias` was pinned without its console confirming it; None if
        it is confirmed, trusted on first use, or not pinned."""
        for line in self._lines():
            entry = self._parse_noted(line)
            if entry and alias in entry[0] and entry[2].startswith(UNCONFIRMED + ":"):
                try:
                    return float(entry[2].split(":", 1)[1].split()[0])
                except (ValueError, IndexError):
                    return 0.0  # no readable time: as if pinned long ago
        return None

    def settle(self, alias: str, *, tofu: bool = False) -> None:
        """The keys of `alias` are confirmed by its console, or (`tofu`) trusted on first
        use because it never showed one."""
        with self._locked():
            out: list[str] = []
            for line in self._lines():
                entry = self._parse_noted(line)
                if entry and entry[0] == [alias]:
                    line = f"{alias} {entry[1]} {TOFU}" if tofu else f"{alias} {entry[1]}"
                out.append(line)
            self._write(out)

    def forget(self, alias: str) -> bool:
        """Drop every key of `alias`; True if there was one."""
        with self._locked():
            return self._forget(alias)

    def _forget(self, alias: str) -> bool:
        lines = self._lines()
        kept: list[str] = []
        for line in lines:
            entry = self._parse(line)
            if entry and alias in entry[0]:
                others = [h for h in entry[0] if h != alias]
                if others:
                    kept.append(f"{','.join(others)} {entry[1]}")
                continue
            kept.append(line)
        if kept == lines:
            return False
        self._write(kept)
        return True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize read-modify-write across processes (a TUI and a CLI may pin at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, lines: list[str]) -> None:
        import tempfile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".known_hosts-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("".join(f"{line}\n" for line in lines))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
