"""The sandbox's `HostResolver`: boxes answer on their own loopback address (127.x.y.z),
at the port the sandbox daemon publishes in its state file. The host key it publishes
there is not trusted: a first key is checked against the box's console output, as on
AWS (`ConsoleKeys`)."""

from __future__ import annotations

from collections.abc import Sequence

from cloudsh.config import Settings
from cloudsh.errors import SandboxError
from cloudsh.models import HostInfo, Instance
from cloudsh.sandbox.state import pid_alive, read_state
from cloudsh.services.hosts import ConsoleKeys, check_running


class SandboxHostResolver(ConsoleKeys):
    """The local cloud: the address and port the sandbox daemon publishes."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def ssh_ports(self, insts: Sequence[Instance]) -> dict[str, int]:
        state = read_state(self.settings.sandbox_path)
        boxes = state.instances if state is not None else {}
        return {
            i.id: int(box.ssh_port)
            for i in insts
            if i.state == "running" and (box := boxes.get(i.id)) is not None and box.ready and box.ssh_port
        }

    def resolve(self, inst: Instance) -> HostInfo | None:
        if not check_running(inst):
            return None
        state = read_state(self.settings.sandbox_path)
        if state is None or not pid_alive(state.pid):
            raise SandboxError(
                "the sandbox cloud is not running", "start it with `cloudsh sandbox up`"
            )
        box = state.instances.get(inst.id)
        if box is None or not box.ready or not box.ssh_port:
            return None
        return HostInfo(
            instance_id=inst.id,
            name=inst.label,
            host=box.ssh_host or "127.0.0.1",
            port=int(box.ssh_port),
            user=self.settings.ssh_user,
            key_path=str(self.settings.key_path),
            host_key_alias=inst.id,
            expected_host_keys=self.console_keys(inst.id),
        )
