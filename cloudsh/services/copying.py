"""Where `put` and `get` write, and the SFTP steps they share (asyncssh only here and in ssh.py).

A directory lands at the path given (`dir_target`), so copying it a second time replaces or
merges what the first copy made instead of nesting a copy inside it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import asyncssh


async def remote_kind(sftp: asyncssh.SFTPClient, path: str) -> str | None:
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None
    return "dir" if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY else "file"


def aside(name: str, what: str, tag: str) -> str:
    """A hidden name beside `name` for a copy in progress (`what` = "part") or the old
    version during a swap ("old"). Only the start of `name` is kept: a name near the
    filesystem's 255-byte limit would otherwise make one that is too long."""
    return f".{name[:40]}.cloudsh-{what}-{tag}"


def dir_target(dest: str, name: str) -> str:
    """Where a directory called `name` is copied for the destination `dest`: into `dest`
    when it says so (a trailing `/`, `.`, `..`, `~`), else `dest` itself, whether it exists
    or not, so a second copy lands where the first did (never `dest/name`)."""
    if dest.endswith("/") or dest in ("", "~") or PurePosixPath(dest).name in ("", ".", ".."):
        return str(PurePosixPath(dest or ".") / name)
    return dest


async def put_target(sftp: asyncssh.SFTPClient, local: Path, remote: str) -> tuple[str, str | None]:
    if local.is_dir():
        remote = dir_target(remote, local.resolve().name)
        return remote, await remote_kind(sftp, remote)
    kind = await remote_kind(sftp, remote)
    if kind == "dir":
        remote = str(PurePosixPath(remote) / local.name)
        kind = await remote_kind(sftp, remote)
    return remote, kind


async def remove(sftp: asyncssh.SFTPClient, path: str) -> None:
    if await sftp.isdir(path):
        await sftp.rmtree(path)
    elif await sftp.exists(path):
        await sftp.remove(path)


def get_target(local: str | Path, remote: str, remote_is_dir: bool) -> Path:
    """Where `get` of `remote` to `local` writes: a directory as `dir_target` says, a file
    into `local` when that is a directory."""
    name = PurePosixPath(remote.rstrip("/")).name
    if remote_is_dir:
        return Path(dir_target(str(local), name))
    return Path(local) / name if Path(local).is_dir() else Path(local)


def merge_tree(src: Path, dst: Path) -> None:
    """Move every file of `src` into `dst` (each rename atomic), then drop `src`."""
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(dirpath) / name, dst / rel / name)
    shutil.rmtree(src, ignore_errors=True)
