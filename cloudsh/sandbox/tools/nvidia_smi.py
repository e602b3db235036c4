#!/usr/bin/env python3
"""Sandbox stand-in for `nvidia-smi` on GPU instance types; there is no real GPU here.

Installed as `nvidia-smi` in a GPU box's tool dir, with `nvidia-smi.json` beside it
({"model", "count", "memory_mib", "instance_id"}, from the type's EC2 `GpuInfo`). It
answers as the real tool does, for an idle GPU: the usual table, `-L` / `--list-gpus`,
and `--query-gpu=FIELD,... --format=csv[,noheader][,nounits]`.

Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

#: The GPU description, beside the program.
CONFIG = "nvidia-smi.json"
DRIVER, CUDA = "550.127.05", "12.4"
#: The unit of a query field: in its CSV header always, after its values unless `nounits`.
UNITS = {"memory.total": "MiB", "memory.used": "MiB", "memory.free": "MiB", "utilization.gpu": "%"}


class Gpu:
    def __init__(self, model: str, count: int, memory_mib: int, instance_id: str) -> None:
        self.model = model
        self.count = count
        self.memory_mib = memory_mib
        self.instance_id = instance_id

    @classmethod
    def load(cls, path: str) -> Gpu:
        with open(path) as f:
            doc: dict[str, Any] = json.load(f)
        return cls(str(doc["model"]), int(doc["count"]), int(doc["memory_mib"]), str(doc.get("instance_id", "")))

    def uuid(self, i: int) -> str:
        """Stable per box and GPU index, shaped as NVIDIA's."""
        h = hashlib.sha1(f"{self.instance_id}-{i}".encode()).hexdigest()
        return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def list_gpus(gpu: Gpu) -> list[str]:
    return [f"GPU {i}: {gpu.model} (UUID: {gpu.uuid(i)})" for i in range(gpu.count)]


def _values(gpu: Gpu) -> dict[str, Callable[[int], str]]:
    """Each query field's value for GPU i, without its unit (an idle GPU)."""
    return {
        "name": lambda i: gpu.model,
        "index": str,
        "uuid": gpu.uuid,
        "memory.total": lambda i: str(gpu.memory_mib),
        "memory.used": lambda i: "0",
        "memory.free": lambda i: str(gpu.memory_mib),
        "utilization.gpu": lambda i: "0",
        "temperature.gpu": lambda i: "31",
        "driver_version": lambda i: DRIVER,
        "count": lambda i: str(gpu.count),
    }


def query(gpu: Gpu, fields_text: str, fmt: str) -> list[str]:
    """The CSV lines of `--query-gpu=FIELDS --format=FMT`; ValueError names a bad field."""
    values = _values(gpu)
    fields = [f.strip() for f in fields_text.split(",") if f.strip()]
    for f in fields:
        if f not in values:
            raise ValueError(f'Field "{f}" is not a valid field to query.')
    options = fmt.split(",")
    units = "nounits" not in options
    lines = []
    if "noheader" not in options:
        lines.append(", ".join(f + (f" [{UNITS[f]}]" if f in UNITS else "") for f in fields))
    for i in range(gpu.count):
        lines.append(", ".join(values[f](i) + (f" {UNITS[f]}" if units and f in UNITS else "") for f in fields))
    return lines


def table(gpu: Gpu) -> list[str]:
    """The default output: one block per GPU, then the (empty) process list."""
    line = "+-----------------------------------------------------------------------------------------+"
    rule = "+-----------------------------------------+------------------------+----------------------+"
    out = [
        line,
        f"| NVIDIA-SMI {DRIVER}             Driver Version: {DRIVER}     CUDA Version: {CUDA}     |",
        "|-----------------------------------------+------------------------+----------------------+",
        "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
        "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
        "|=========================================+========================+======================|",
    ]
    for i in range(gpu.count):
        out += [
            f"|   {i}  {gpu.model[:24]:<24}       On  |   00000000:00:{0x1e - i:02X}.0 Off |                    0 |",
            f"|  0%   31C    P8             16W /  300W |       0MiB / {gpu.memory_mib:>6}MiB |      0%      Default |",
            rule,
        ]
    return out + [
        "",
        line,
        "| Processes:                                                                              |",
        "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |",
        "|=========================================================================================|",
        "|  No running processes found                                                             |",
        line,
    ]


def run(gpu: Gpu, args: list[str]) -> tuple[int, list[str]]:
    """(exit status, lines) for the arguments; an error's line goes to stderr."""
    if gpu.count == 0:  # the driver, and no GPU for it (a CPU type)
        return 9, [
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running."
        ]
    if "-L" in args or "--list-gpus" in args:
        return 0, list_gpus(gpu)
    fields = next((a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")), None)
    if fields is None:
        return 0, table(gpu)
    fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), "csv")
    try:
        return 0, query(gpu, fields, fmt)
    except ValueError as exc:
        return 2, [str(exc)]


def main(argv: list[str]) -> int:
    gpu = Gpu.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), CONFIG))
    status, lines = run(gpu, argv)
    print("\n".join(lines), file=sys.stdout if status == 0 else sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
