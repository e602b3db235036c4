"""The sandbox's tool stand-ins (`cloudsh/sandbox/tools/`), run in this process and as installed."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloudsh.sandbox import devices, tools
from cloudsh.sandbox.gpu import Gpu, install_nvidia_smi
from cloudsh.sandbox.tools import blockdev, nvidia_smi
from cloudsh.sandbox.tools.blockdev import Box, Fail

A10G = nvidia_smi.Gpu("NVIDIA A10G", 1, 23028, "i-0123456789abcdef0")


@pytest.mark.parametrize("name", ["blockdev", "nvidia_smi"])
def test_programs_are_stdlib_only_and_shipped_as_written(name: str) -> None:
    text = tools.source(name)
    assert text.startswith("#!/usr/bin/env python3\n")
    assert text == Path(tools.__file__).with_name(f"{name}.py").read_text()
    tree = ast.parse(text, feature_version=(3, 8))  # whatever python3 the box has
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in imported if m.split(".")[0] not in sys.stdlib_module_names | {"__future__"}]


# -- nvidia-smi -------------------------------------------------------------------------------


def test_nvidia_smi_lists_gpus_as_the_real_one() -> None:
    status, lines = nvidia_smi.run(A10G, ["-L"])
    assert status == 0 and len(lines) == 1
    name, _, rest = lines[0].partition(" (UUID: GPU-")
    assert name == "GPU 0: NVIDIA A10G"
    uuid = rest.rstrip(")")
    assert [len(p) for p in uuid.split("-")] == [8, 4, 4, 4, 12]
    assert nvidia_smi.run(A10G, ["--list-gpus"])[1] == lines  # stable for the box


def test_nvidia_smi_query_csv_as_the_real_one() -> None:
    # `nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv` prints units in
    # the header always and after values unless `nounits`.
    assert nvidia_smi.run(A10G, ["--query-gpu=name,memory.total,utilization.gpu", "--format=csv"]) == (
        0, ["name, memory.total [MiB], utilization.gpu [%]", "NVIDIA A10G, 23028 MiB, 0 %"],
    )
    assert nvidia_smi.run(A10G, ["--query-gpu=name,memory.total", "--format=csv,noheader"]) == (
        0, ["NVIDIA A10G, 23028 MiB"],
    )
    assert nvidia_smi.run(A10G, ["--query-gpu=memory.used,memory.free", "--format=csv,noheader,nounits"]) == (
        0, ["0, 23028"],
    )
    four = nvidia_smi.Gpu("NVIDIA T4", 4, 15360, "i-1")
    status, lines = nvidia_smi.run(four, ["--query-gpu=index,count", "--format=csv,noheader"])
    assert lines == ["0, 4", "1, 4", "2, 4", "3, 4"]
    assert nvidia_smi.run(A10G, ["--query-gpu=name,bogus", "--format=csv"]) == (
        2, ['Field "bogus" is not a valid field to query.'],
    )


def test_nvidia_smi_table_has_the_real_layout() -> None:
    status, lines = nvidia_smi.run(A10G, [])
    assert status == 0
    assert {len(line) for line in lines if line} == {91}  # the real table's width
    assert "Driver Version: 550.127.05" in lines[1] and "CUDA Version: 12.4" in lines[1]
    [gpu_row] = [line for line in lines if line.startswith("|   0  ")]
    assert "NVIDIA A10G" in gpu_row and "00000000:00:1E.0" in gpu_row
    assert any("0MiB /  23028MiB" in line for line in lines)
    assert any("No running processes found" in line for line in lines)


def test_installed_nvidia_smi_reads_its_gpu_beside_it(tmp_path: Path) -> None:
    install_nvidia_smi(tmp_path / "bin", Gpu("NVIDIA A10G", 1, 23028), "i-0123456789abcdef0")
    program = tmp_path / "bin" / "nvidia-smi"
    assert os.access(program, os.X_OK)
    done = subprocess.run([str(program), "--query-gpu=name,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True, check=True)
    assert done.stdout == "NVIDIA A10G, 23028 MiB\n"
    listed = subprocess.run([str(program), "-L"], capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == nvidia_smi.list_gpus(A10G)[0]


# -- the block-device tools ------------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Box:
    """A Nitro box with its root disk and one blank 50 GiB volume, mounts allowed."""
    blk, volumes = tmp_path / "blk", tmp_path / "volumes"
    blk.mkdir()
    (volumes / "vol-0abc").mkdir(parents=True)
    (blk / "devices.json").write_text(json.dumps({"devices": [
        {"name": "nvme0n1", "volume_id": "vol-0root", "size_gb": 8, "root": True, "serial": "vol0root"},
        {"name": "nvme1n1", "volume_id": "vol-0abc", "size_gb": 50, "root": False, "serial": "vol0abc"},
    ]}))
    return Box(str(volumes), str(blk), isolated=True)


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def test_lsblk(box: Box, capsys: pytest.CaptureFixture[str]) -> None:
    assert blockdev.lsblk(box, []) == 0
    assert _out(capsys).splitlines() == [
        "NAME    SIZE TYPE MOUNTPOINTS",
        "nvme0n1 8G   disk /",
        "nvme1n1 50G  disk",
    ]
    assert blockdev.lsblk(box, ["-J", "-o", "NAME,SERIAL,MODEL,FSTYPE"]) == 0
    doc = json.loads(_out(capsys))
    assert doc["blockdevices"][1] == {"name": "nvme1n1", "serial": "vol0abc",
                                      "model": "Amazon Elastic Block Store", "fstype": None}
    assert blockdev.lsblk(box, ["-n", "-p", "--output=NAME"]) == 0
    assert _out(capsys).split() == ["/dev/nvme0n1", "/dev/nvme1n1"]


def test_mkfs_blkid_mount_umount(box: Box, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert blockdev.blkid(box, ["/dev/nvme1n1"]) == 2  # blank: nothing to say
    assert blockdev.mkfs(box, ["-q", "-L", "data", "/dev/nvme1n1"]) == 0 and _out(capsys) == ""
    fs = json.loads((tmp_path / "volumes" / "vol-0abc" / "fs.json").read_text())
    assert fs["type"] == "ext4" and fs["label"] == "data"
    assert blockdev.blkid(box, []) == 0
    assert _out(capsys).strip() == f'/dev/nvme1n1: LABEL="data" UUID="{fs["uuid"]}" BLOCK_SIZE="4096" TYPE="ext4"'
    assert blockdev.blkid(box, ["-U", fs["uuid"]]) == 0 and _out(capsys).strip() == "/dev/nvme1n1"
    assert blockdev.blkid(box, ["-s", "UUID", "-o", "value", "/dev/nvme1n1"]) == 0
    assert _out(capsys).strip() == fs["uuid"]
    with pytest.raises(Fail, match="contains a ext4 file system labelled 'data'"):
        blockdev.mkfs(box, ["/dev/nvme1n1"])  # no -F: the filesystem is kept
    with pytest.raises(Fail, match="is mounted"):
        blockdev.mkfs(box, ["-F", "/dev/nvme0n1"])

    target = tmp_path / "mnt" / "data"
    target.mkdir(parents=True)
    assert blockdev.mount(box, ["LABEL=data", str(target)]) == 0
    assert target.is_symlink() and target.resolve() == (tmp_path / "volumes" / "vol-0abc" / "data").resolve()
    assert box.mountpoint(box.devices()[1]) == str(target)
    with pytest.raises(Fail, match="already mounted") as again:
        blockdev.mount(box, [f"UUID={fs['uuid']}", str(tmp_path)])
    assert again.value.status == 32
    blockdev.lsblk(box, ["-o", "NAME,MOUNTPOINT,LABEL"])
    assert f"nvme1n1 {target} data" in _out(capsys)
    with pytest.raises(Fail, match="will not make a filesystem here"):
        blockdev.mkfs(box, ["-F", "/dev/nvme1n1"])
    assert blockdev.umount(box, [str(target)]) == 0
    assert target.is_dir() and not target.is_symlink()
    with pytest.raises(Fail, match="not mounted"):
        blockdev.umount(box, [str(target)])


def test_mount_needs_isolation_and_sudo_uses_the_box_fstab(box: Box, tmp_path: Path) -> None:
    open_box = Box(box.volumes, box.blk, isolated=False)
    blockdev.mkfs(open_box, ["-q", "/dev/nvme1n1"])
    with pytest.raises(Fail, match="only on a sandbox with bubblewrap isolation"):
        blockdev.mount(open_box, ["/dev/nvme1n1", str(tmp_path)])
    assert blockdev.sudo_argv(open_box, ["-u", "root", "tee", "-a", "/etc/fstab"]) == ["tee", "-a", open_box.fstab]
    assert blockdev.sudo_argv(box, ["tee", "/etc/fstab"]) == ["tee", "/etc/fstab"]  # bound over it
    with pytest.raises(Fail, match="usage: sudo"):
        blockdev.sudo_argv(box, ["-n"])


def test_installed_tools_answer_by_name(tmp_path: Path) -> None:
    sandbox_dir, tool_dir = tmp_path / "sandbox", tmp_path / "bin"
    devices.install_tools(tool_dir, sandbox_dir, "i-1", isolated=False)
    blk = devices.blk_dir(sandbox_dir, "i-1")
    (blk / "devices.json").write_text(json.dumps({"devices": [
        {"name": "xvda", "volume_id": "vol-0root", "size_gb": 8, "root": True, "serial": ""},
    ]}))
    assert sorted(p.name for p in tool_dir.iterdir()) == sorted([devices.PROGRAM, blockdev.CONFIG, *blockdev.TOOLS])
    done = subprocess.run([str(tool_dir / "lsblk"), "-n", "-o", "NAME,SIZE"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["xvda", "8G"]
    refused = subprocess.run([str(tool_dir / "mkfs.ext4"), "/dev/xvdz"], capture_output=True, text=True)
    assert refused.returncode == 1 and "No such file or directory" in refused.stderr
    assert blockdev.main(["cloudsh-blk"]) == 2
