"""The sandbox's cloud on disk: it survives `sandbox down`/`up`, a daemon crash and a reboot.

moto keeps EC2 in memory. The daemon pickles each region's EC2 backend (boxes, volumes,
images, snapshots, key pairs, groups, tags), with its own tables (ports, spot behaviours,
capacity limits, quotas, this machine's simulated address), into
`<sandbox>/cloud.pickle`: written atomically (a temporary file renamed over the old one)
in the first quiet moment after each request that may have changed the cloud (within 2 s
however busy it is), and at shutdown. The trees
that go with it (`instances/`, `images/`, `volumes/`, `snapshots/`) stay where they are.
At the next start `restore` loads it; a box that was running comes back stopped, as
after a host's power loss, and starts again with its tree.

If the file cannot be read (corrupt, or written by another moto), the daemon starts
an empty cloud, moves the old file and trees to `<sandbox>/lost-<time>/`, and leaves
`restore-failed`, which the first front end to connect says once (`take_notice`).

Box processes (each box's bubblewrap init, each SSH session) are recorded in
`<sandbox>/procs/<pid>` with the boot and start time that identify them; a daemon that
was killed cannot end them, so the next start does (`kill_leftovers`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("cloudsh.sandbox.persist")

CLOUD_FILE = "cloud.pickle"
NOTICE_FILE = "restore-failed"
PROCS_DIR = "procs"
TREES = ("instances", "images", "volumes", "snapshots")
FORMAT = 1
#: How long without requests after a change before the cloud is written (a burst is
#: written once, between requests), and the longest a change waits while requests keep coming.
SAVE_DELAY_S = 0.3
SAVE_MAX_DELAY_S = 2.0


@dataclass
class Restored:
    """What `restore` brought back: the daemon's own tables ({} for a new cloud)."""

    tables: dict[str, Any] = field(default_factory=dict)
    #: Why the old cloud could not be restored, "" if it was (or there was none).
    failure: str = ""


# -- saving and loading the cloud ----------------------------------------------------------


def _moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


def save(sandbox_dir: Path, tables: dict[str, Any]) -> None:
    """Write every region's EC2 backend and `tables`, atomically.

    Raises:
        RuntimeError: a request changed the cloud while it was being read (try again).
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    # A header that needs no moto class to read, then the cloud.
    header = {"format": FORMAT, "moto": _moto_version()}
    cloud = {"regions": dict(ec2_backends[DEFAULT_ACCOUNT_ID].items()), "tables": tables}
    data = pickle.dumps(header) + pickle.dumps(cloud, protocol=pickle.HIGHEST_PROTOCOL)
    fd, tmp = tempfile.mkstemp(dir=sandbox_dir, prefix=".cloud-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sandbox_dir / CLOUD_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def restore(sandbox_dir: Path) -> Restored:
    """Load the saved cloud into moto (boxes stopped), or start empty and say why."""
    path = sandbox_dir / CLOUD_FILE
    if not path.exists():
        # No saved cloud: trees left by a run that kept none belong to nothing.
        for tree in TREES:
            shutil.rmtree(sandbox_dir / tree, ignore_errors=True)
        return Restored()
    try:
        doc = _load(path)
        regions = _stopped(doc["regions"])
    except Exception as exc:  # noqa: BLE001  (any unpickling failure means the same thing)
        reason = str(exc) if isinstance(exc, _Incompatible) else f"{path.name} is unreadable ({exc!r})"
        kept = _keep_old(sandbox_dir)
        notice = (
            f"the sandbox could not restore its cloud: {reason}; "
            f"it started empty and kept the old state at {kept}"
        )
        (sandbox_dir / NOTICE_FILE).write_text(notice + "\n")
        log.error("%s", notice)
        return Restored(failure=reason)
    _install(regions)
    for mount in (sandbox_dir / "volumes").glob("*/mount.json"):
        mount.unlink(missing_ok=True)  # every box is stopped: nothing is mounted
    log.info("restored the cloud of %s (%s)", path, ", ".join(sorted(regions)) or "empty")
    return Restored(tables=dict(doc.get("tables") or {}))


class _Incompatible(ValueError):
    """A readable file this sandbox cannot use."""


def _load(path: Path) -> dict[str, Any]:
    # The daemon's own file, in the user's own directory: unpickling it trusts only them.
    with open(path, "rb") as f:
        header = pickle.load(f)  # noqa: S301
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise _Incompatible(f"{path.name} is not a cloud this sandbox wrote")
        if header.get("moto") != _moto_version():
            raise _Incompatible(f"it was saved with moto {header.get('moto')}, and moto {_moto_version()} runs now")
        cloud = pickle.load(f)  # noqa: S301
    if not isinstance(cloud, dict):
        raise _Incompatible(f"{path.name} is not a cloud this sandbox wrote")
    return cloud


def _stopped(regions: dict[str, Any]) -> dict[str, Any]:
    """The saved backends with every box stopped (or terminated, if it was going)."""
    for backend in regions.values():
        for inst in backend.all_instances():
            state = str(inst.state)
            if state == "shutting-down":
                inst.terminate()
            elif state not in ("stopped", "terminated"):
                inst.stop()
    return dict(regions)


def _install(regions: dict[str, Any]) -> None:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    account = ec2_backends[DEFAULT_ACCOUNT_ID]
    for region, backend in regions.items():
        account[region] = backend


def _keep_old(sandbox_dir: Path) -> Path:
    """Move the unreadable cloud and its trees aside; returns where they went."""
    kept = sandbox_dir / f"lost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    kept.mkdir(parents=True, exist_ok=True)
    for name in (CLOUD_FILE, *TREES):
        if (sandbox_dir / name).exists():
            os.replace(sandbox_dir / name, kept / name)
    return kept


def take_notice(sandbox_dir: Path) -> str:
    """The restore failure not yet said, or ""; whoever takes it says it (once)."""
    path = sandbox_dir / NOTICE_FILE
    taken = path.with_name(f".{NOTICE_FILE}-{os.getpid()}")
    try:
        os.replace(path, taken)  # only one reader wins the rename
    except OSError:
        return ""
    try:
        return taken.read_text().strip()
    finally:
        taken.unlink(missing_ok=True)


# -- box processes -------------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time, "" once it is gone: a pid reused later is not it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _ours(recorded: str, pid: int) -> bool:
    """Whether the group `pid` leads (or led) is the one recorded: same boot, and its
    leader is the same process or gone (a pid stays unused while its group lives on)."""
    boot, _, start = recorded.partition(" ")
    now = _start_time(pid)
    return bool(boot) and boot == _boot_id() and (now == start or not now)


def record(sandbox_dir: Path, pid: int) -> None:
    """Remember a box process group (led by `pid`) until `forget`."""
    procs = sandbox_dir / PROCS_DIR
    with contextlib.suppress(OSError):
        procs.mkdir(exist_ok=True)
        (procs / str(pid)).write_text(f"{_boot_id()} {_start_time(pid)}")


def forget(sandbox_dir: Path, pid: int) -> None:
    (sandbox_dir / PROCS_DIR / str(pid)).unlink(missing_ok=True)


def kill_leftovers(sandbox_dir: Path) -> list[int]:
    """End the process groups an earlier daemon recorded and that still run; their pids."""
    procs = sandbox_dir / PROCS_DIR
    killed = []
    for entry in list(procs.glob("*")) if procs.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            pid = int(entry.name)
            if _ours(entry.read_text(), pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                    killed.append(pid)
        entry.unlink(missing_ok=True)
    if killed:
        log.info("ended %d box process group(s) an earlier daemon left running", len(killed))
    return killed
