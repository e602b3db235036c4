"""Stand-ins for tools a sandbox box has that this machine may not: programs run inside boxes.

Each module here is a complete stdlib-only program (nothing from cloudsh; it runs with
the box's `python3`) with a `main(argv)`. `install` copies one into a box's tool dir,
first on the box's PATH, from its source file, with the settings it reads beside it.

    blockdev     lsblk, blkid, mkfs.ext4, mount, umount, sudo over volume trees (`devices.py`)
    nvidia_smi   nvidia-smi on boxes with the NVIDIA driver (`gpu.py`)
    apt_get      apt-get installing the NVIDIA driver (`gpu.py`)
    crontab      crontab, whose `@reboot` lines the sandbox runs at each boot (`cron.py`)
    poweroff     shutdown, poweroff: the box powers itself off (`poweroff.py`)
    jupyter_server  a Jupyter server and `jupyter server list`, for the idle stop's and tunnel's tests (not installed)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudsh.agents import program_source


def source(name: str) -> str:
    """The text of the program `cloudsh.sandbox.tools.<name>` (read, not imported)."""
    return program_source(f"{__name__}.{name}")


def install(name: str, target: Path, settings: dict[str, Any] | None = None, *, config: str = "") -> None:
    """Write the program `name` as the executable `target`, and `settings` as JSON in
    `config` (a file name) beside it, where the program looks for them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        (target.parent / config).write_text(json.dumps(settings, indent=1) + "\n")
    target.write_text(source(name))
    target.chmod(0o755)
