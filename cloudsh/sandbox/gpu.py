"""The GPU of a sandbox instance type, the NVIDIA driver of a box, and its `nvidia-smi`.

As on EC2, a GPU is not a driver: plain Ubuntu has none, so `nvidia-smi` is "command not
found" there whatever the type. A box has the driver when it was launched from the Deep
Learning Base OSS NVIDIA Driver GPU AMI (`images.is_dlami`), or from an image of a box
that had it, or once `sudo apt-get install nvidia-driver-N-server` (the stand-in
`tools/apt_get.py`) recorded it and the box booted again. The record is a file in the
box's own tree (`DRIVER_DIR`), so a frozen image carries it. A box with the driver finds
`tools/nvidia_smi.py` as `nvidia-smi` first on its PATH, describing the GPU of its type
(moto's `GpuInfo`); on a CPU type it fails as the real one does without a GPU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudsh.sandbox import tools
from cloudsh.sandbox.tools import apt_get, nvidia_smi

#: Where a box's tree records its NVIDIA driver (relative to its root), and where a
#: bubblewrap box sees that directory.
DRIVER_DIR = "var/lib/cloudsh-nvidia"
BOX_DRIVER_DIR = "/dev/.cloudsh-nvidia"


@dataclass(frozen=True)
class Gpu:
    model: str
    count: int
    memory_mib: int


def gpu_of(type_info: Mapping[str, Any] | None) -> Gpu | None:
    """The GPU of an instance type from moto's type data (`GpuInfo`), or None."""
    gpus = (type_info or {}).get("GpuInfo", {}).get("Gpus") or []
    if not gpus:
        return None
    g = gpus[0]
    return Gpu(
        model=f"{g.get('Manufacturer', 'NVIDIA')} {g.get('Name', 'GPU')}".strip(),
        count=int(g.get("Count", 1)),
        memory_mib=int(g.get("MemoryInfo", {}).get("SizeInMiB", 0)),
    )


def has_driver(root: Path) -> bool:
    return (root / DRIVER_DIR / apt_get.MARK).is_file()


def record_driver(root: Path, how: str) -> None:
    """The box has the driver (its image had it)."""
    (root / DRIVER_DIR).mkdir(parents=True, exist_ok=True)
    (root / DRIVER_DIR / apt_get.MARK).write_text(json.dumps({"package": how}) + "\n")


def install_tools(tool_dir: Path, root: Path, gpu: Gpu | None, instance_id: str, *, isolated: bool) -> None:
    """The driver's tools at boot: `nvidia-smi` if the box has the driver (describing the
    type's GPU, or failing on a CPU type), and the `apt-get` that installs it."""
    (root / DRIVER_DIR).mkdir(parents=True, exist_ok=True)
    mark = BOX_DRIVER_DIR if isolated else str(root / DRIVER_DIR)
    tools.install("apt_get", tool_dir / "apt-get", {"mark": mark}, config=apt_get.CONFIG)
    if has_driver(root):
        install_nvidia_smi(tool_dir, gpu or Gpu("", 0, 0), instance_id)


def install_nvidia_smi(tool_dir: Path, gpu: Gpu, instance_id: str) -> None:
    """`nvidia-smi` in the box's tool dir, its GPU's description beside it (read at each run)."""
    description = {**asdict(gpu), "instance_id": instance_id}
    tools.install("nvidia_smi", tool_dir / "nvidia-smi", description, config=nvidia_smi.CONFIG)
