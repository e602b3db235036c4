"""A box's crontab and its `@reboot` lines: what cron does on an Ubuntu box at each boot.

The crontab lives on the box's own disk, `root/var/spool/cron/crontabs/ubuntu` in its
tree (so an image of the box carries it, as an AMI carries /var), written by the
`crontab` stand-in (`tools/crontab.py`). Each time the box boots, its `@reboot` commands
start inside the box, detached, as cron starts them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from cloudsh.sandbox import tools as box_tools
from cloudsh.sandbox.tools.crontab import CONFIG, USER

log = logging.getLogger("cloudsh.sandbox.cron")

#: Where a bubblewrap box sees its crontab directory (under its own /dev tmpfs, where
#: bubblewrap can make mount points; /var is the host's, read-only).
BOX_CRON = "/dev/.cloudsh-cron"


def cron_dir(root: Path) -> Path:
    return root / "var" / "spool" / "cron" / "crontabs"


def install_tool(tools: Path, root: Path, *, isolated: bool) -> None:
    cron_dir(root).mkdir(parents=True, exist_ok=True)
    where = BOX_CRON if isolated else str(cron_dir(root))
    box_tools.install("crontab", tools / "crontab", {"dir": where}, config=CONFIG)


def bwrap_binds(root: Path) -> list[str]:
    cron_dir(root).mkdir(parents=True, exist_ok=True)
    return ["--bind", str(cron_dir(root)), BOX_CRON]


def reboot_commands(root: Path) -> list[str]:
    try:
        lines = (cron_dir(root) / USER).read_text().splitlines()
    except OSError:
        return []
    return [line.split(None, 1)[1] for line in lines if line.startswith("@reboot") and len(line.split(None, 1)) == 2]


async def run_at_boot(
    root: Path, argv: Callable[[str], list[str]], env: dict[str, str], cwd: str | None, pids: set[int]
) -> None:
    """Start the box's `@reboot` commands, detached; their pids go in `pids` (killed when
    the box stops)."""
    for command in reboot_commands(root):
        proc = await asyncio.create_subprocess_exec(
            *argv(command), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True,
        )
        pids.add(proc.pid)
        log.info("@reboot %s (pid %d)", command, proc.pid)
        task = asyncio.ensure_future(proc.wait())
        task.add_done_callback(functools.partial(_forget, pids, proc.pid))
        _reaping.add(task)
        task.add_done_callback(_reaping.discard)


def _forget(pids: set[int], pid: int, _done: asyncio.Future[int]) -> None:
    pids.discard(pid)


#: The waits that reap finished @reboot commands (kept so they are not collected early).
_reaping: set[asyncio.Future[int]] = set()
