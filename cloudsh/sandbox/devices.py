"""A sandbox box's block devices: its device table, and the tools that read it.

    instances/<id>/blk/devices.json   the box's block devices (root first), from EC2's
                                      block-device mapping (`write_devices`)
    instances/<id>/blk/fstab          the box's /etc/fstab

Inside a box, stand-ins for `lsblk`, `blkid`, `mkfs.ext4`, `mount`, `umount` and `sudo`
(the program `tools/blockdev.py`, installed with the other tool stand-ins, first on PATH)
present attached volumes as block devices: NVMe names with the volume id as serial on
Nitro types, `xvdX` on Xen types, as on EC2. `mount` makes the mount point a link to the
volume's `data/` (see `storage.py`), which bubblewrap shows inside the box under
/dev/.cloudsh-volumes. `sudo` runs its command as the box's user and points `/etc/fstab`
at the box's own fstab.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudsh.sandbox import tools as box_tools
from cloudsh.sandbox.tools.blockdev import CONFIG, TOOLS

log = logging.getLogger("cloudsh.sandbox.devices")

#: Where a bubblewrap box sees the volume trees and its device table.
BOX_VOLUMES = "/dev/.cloudsh-volumes"
BOX_BLK = "/dev/.cloudsh-blk"
#: The file name of the stand-in in a box's tool dir; each tool name links to it.
PROGRAM = "cloudsh-blk"


def blk_dir(sandbox_dir: Path, instance_id: str) -> Path:
    return sandbox_dir / "instances" / instance_id / "blk"


def bwrap_binds(sandbox_dir: Path, instance_id: str) -> list[str]:
    """bubblewrap arguments that show volumes and the box's devices inside the box, under
    the box's own /dev (a tmpfs, so bubblewrap can make the mount points there)."""
    volumes = sandbox_dir / "volumes"
    blk = blk_dir(sandbox_dir, instance_id)
    volumes.mkdir(parents=True, exist_ok=True)
    blk.mkdir(parents=True, exist_ok=True)
    (blk / "fstab").touch()
    binds = ["--bind", str(volumes), BOX_VOLUMES, "--ro-bind", str(blk), BOX_BLK]
    return [*binds, "--bind", str(blk / "fstab"), "/etc/fstab"]


def install_tools(tools: Path, sandbox_dir: Path, instance_id: str, *, isolated: bool) -> None:
    """Write the block-device stand-ins into the box's tool dir (first on its PATH)."""
    tools.mkdir(parents=True, exist_ok=True)
    blk = blk_dir(sandbox_dir, instance_id)
    blk.mkdir(parents=True, exist_ok=True)
    (blk / "fstab").touch()
    settings = {
        "volumes": BOX_VOLUMES if isolated else str(sandbox_dir / "volumes"),
        "blk": BOX_BLK if isolated else str(blk),
        "isolated": isolated,
    }
    box_tools.install("blockdev", tools / PROGRAM, settings, config=CONFIG)
    for name in TOOLS:
        link = tools / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(PROGRAM)


def write_devices(sandbox_dir: Path, inst: Any) -> None:
    """The box's block devices (root first) as the stand-ins see them, from moto's state."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    nitro = (INSTANCE_TYPES.get(str(inst.instance_type)) or {}).get("Hypervisor") == "nitro"
    root_name = getattr(inst, "root_device_name", "/dev/sda1")
    mappings = sorted(
        inst.block_device_mapping.items(), key=lambda kv: (kv[0] != root_name, kv[0])
    )
    devices = []
    for n, (path, bdt) in enumerate(mappings):
        if nitro:
            name = f"nvme{n}n1"
        else:
            name = "xvda" if path == root_name else "xvd" + path.rstrip("0123456789")[-1]
        devices.append(
            {
                "name": name,
                "volume_id": bdt.volume_id,
                "size_gb": int(bdt.size or 0),
                "root": path == root_name,
                "serial": bdt.volume_id.replace("-", "") if nitro else "",
            }
        )
    blk = blk_dir(sandbox_dir, inst.id)
    blk.mkdir(parents=True, exist_ok=True)
    tmp = blk / ".devices.json.tmp"
    tmp.write_text(json.dumps({"devices": devices}, indent=1))
    tmp.replace(blk / "devices.json")


async def mount_at_boot(argv: Callable[[str], list[str]], env: dict[str, str], cwd: str | None) -> None:
    """What the box does with its volumes as it boots (`cloudsh-blk boot`: the fstab lines
    mounted again); waited for, as systemd mounts local file systems before the services
    that use them."""
    proc = await asyncio.create_subprocess_exec(
        *argv(f"{PROGRAM} boot"), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        err = b"took over 30 s"
    if err:
        log.warning("mounting the fstab at boot: %s", err.decode(errors="replace").strip())
