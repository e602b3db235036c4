"""A GPU box's NVIDIA driver: checked before a resize to a GPU type, installed if missing,
and the GPU `nvidia-smi` reports once the box runs as the new type.

Plain Ubuntu has no NVIDIA driver, so a box resized to a GPU type has a GPU it cannot use
until the driver is installed ("Install NVIDIA drivers on Linux instances",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/install-nvidia-driver.html; Ubuntu
Server's "NVIDIA drivers installation", https://documentation.ubuntu.com/server/how-to/graphics/install-nvidia-drivers/).
Installed from Ubuntu's archive while the box still runs as its old type (no GPU needed:
DKMS builds the module for the running kernel), it loads at the next boot, which the
resize's own stop and start is. Each step is its own function, so any workflow that
changes a box's type (a resize, a spot box's migration) can call them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from cloudsh.errors import CloudshError
from cloudsh.models import (
    FAMILY_UBUNTU,
    FAMILY_WITH_DRIVER,
    TAG_IMAGE_FAMILY,
    Instance,
    InstanceType,
)
from cloudsh.ops.events import Progress, quiet
from cloudsh.ops.reach import ssh_host
from cloudsh.services.backend import Backend

#: Ubuntu's current server (long-term support) driver branch for data-centre GPUs; the
#: Kepler-era K80 (p2) stopped at 470.
DRIVER_BRANCH = "570"
OLD_GPU_BRANCH = {"K80": "470"}
#: Whether the box has the driver's tools: what a driver install gives, what the DLAMI has.
CHECK = "command -v nvidia-smi >/dev/null 2>&1 && echo yes || echo no"


def driver_package(itype: InstanceType) -> str:
    """The Ubuntu package of the NVIDIA driver for the GPU of `itype`."""
    return f"nvidia-driver-{OLD_GPU_BRANCH.get(itype.gpu_model, DRIVER_BRANCH)}-server"


@dataclass(frozen=True)
class DriverCheck:
    """What a resize to an NVIDIA GPU type found about the box's driver."""

    #: True / False as the box answered; None when it could not be asked (`why`).
    present: bool | None
    package: str
    why: str = "it is not running"

    @property
    def needs_install(self) -> bool:
        return self.present is False

    def describe(self, label: str) -> str:
        if self.present:
            return f"{label} has the NVIDIA driver"
        if self.present is None:
            return (f"{label}'s NVIDIA driver could not be checked ({self.why}); if it has none, `nvidia-smi` "
                    f"will not work until `cloudsh run {label} -- sudo apt-get install -y {self.package}` "
                    f"and a restart (resizing while it runs does both)")
        return f"{label} has no NVIDIA driver: {self.package} will be installed first (it loads at the restart)"


async def check_driver(backend: Backend, inst: Instance, new: InstanceType) -> DriverCheck | None:
    """Before anything stops: does the box have the driver a GPU of `new` needs? None
    when `new` has no NVIDIA GPU (nothing to check)."""
    if not new.nvidia:
        return None
    package = driver_package(new)
    if inst.state != "running":
        return DriverCheck(inst.has_nvidia_driver or None, package)
    try:
        host = await ssh_host(backend, inst)
        result = await backend.ssh.run(host, CHECK, timeout=60)
    except CloudshError as exc:  # the resize itself does not need SSH: it goes on, and says so
        return DriverCheck(inst.has_nvidia_driver or None, package, f"SSH: {exc.message}")
    return DriverCheck(result.stdout.strip() == "yes", package)


async def install_driver(backend: Backend, inst: Instance, package: str, *, progress: Progress = quiet) -> None:
    """Install the driver package on the running box (Ubuntu's archive), streaming apt's
    progress; the box's image-family tag then says it has the driver."""
    progress(f"installing {package} on {inst.label} (a few minutes on EC2)")
    host = await ssh_host(backend, inst)
    command = (
        "sudo apt-get update -q && "
        f"sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q {shlex.quote(package)}"
    )
    tail: list[str] = []

    def line(text: str) -> None:
        for part in text.splitlines():
            if part.strip():
                tail[:] = [*tail[-4:], part.strip()]
                progress(f"  {part.strip()}")

    result = await backend.ssh.run(host, command, on_stdout=line, on_stderr=line, timeout=1800)
    if not result.ok:
        why = tail[-1] if tail else f"exit status {result.exit_status}"
        raise CloudshError(
            f"installing {package} on {inst.label} failed: {why}",
            f"nothing was stopped; see `cloudsh run {inst.label} -- sudo apt-get install -y {package}`",
        )
    family = inst.image_family or FAMILY_UBUNTU
    if not family.endswith(FAMILY_WITH_DRIVER):
        await backend.ec2.set_tags([inst.id], {TAG_IMAGE_FAMILY: family + FAMILY_WITH_DRIVER})
    progress(f"{package} installed; it loads when {inst.label} restarts")


async def show_gpu(backend: Backend, inst: Instance, *, progress: Progress = quiet) -> str:
    """Run `nvidia-smi -L` on the box and say what GPU it reports; raises if it fails."""
    host = await ssh_host(backend, inst)
    result = await backend.ssh.run(host, "nvidia-smi -L", timeout=60)
    if not result.ok:
        why = (result.stdout.strip() or result.stderr.strip() or f"exit status {result.exit_status}").splitlines()[-1]
        raise CloudshError(
            f"{inst.label} is a {inst.type} but nvidia-smi fails: {why}",
            f"check the driver with `cloudsh run {inst.label} -- nvidia-smi`",
        )
    gpus = result.stdout.strip()
    progress(f"nvidia-smi on {inst.label}: {gpus}")
    return gpus
