"""The GPU of a sandbox instance type, and the `nvidia-smi` stand-in a GPU box gets.

moto's instance-type data carries EC2's `GpuInfo`; a box of such a type finds the
program `tools/nvidia_smi.py` as `nvidia-smi` first on its PATH, describing that GPU.
CPU types get none (`command not found`, as on AWS).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudsh.sandbox import tools
from cloudsh.sandbox.tools import nvidia_smi


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


def install_nvidia_smi(tool_dir: Path, gpu: Gpu, instance_id: str) -> None:
    """`nvidia-smi` in the box's tool dir, its GPU's description beside it (read at each run)."""
    description = {**asdict(gpu), "instance_id": instance_id}
    tools.install("nvidia_smi", tool_dir / "nvidia-smi", description, config=nvidia_smi.CONFIG)
