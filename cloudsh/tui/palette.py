"""The command palette (ctrl+p) mirrors the keys: every action, plus every command of
the registry (which opens the command line with it typed)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode

from cloudsh.commands.registry import REGISTRY
from cloudsh.tui.instances import InstancesPane
from cloudsh.tui.jobs import jobs_palette_entries
from cloudsh.tui.volumes import PALETTE_ACTIONS as STORAGE_PALETTE
from cloudsh.tui.volumes import VolumesPane

if TYPE_CHECKING:
    from cloudsh.tui.host import AppHost

#: (action, title, help) — the same actions as the keys in the footer.
ACTIONS = (
    ("open_box", "Box view of the highlighted box", "everything about it; copy its address or ssh command"),
    ("connect", "Connect to the highlighted box (ssh)", "suspend the app and open an SSH session"),
    ("tunnel", "Tunnel port 8888 of the highlighted box", "Jupyter at http://localhost:8888/"),
    ("tunnels", "Show tunnels", "open port forwards, close one, add another"),
    ("resize", "Resize / add a GPU to the highlighted box", "pick a type; shows $/h now vs after"),
    ("freeze", "Freeze the highlighted box to an image", "create an AMI from it"),
    ("start_stop", "Start or stop the highlighted box", "stopped boxes cost only their storage"),
    ("terminate", "Terminate the highlighted box", "asks first, listing what will be lost"),
    ("ipython", "IPython with `cloud` and `box`", "suspend the app and start IPython"),
    ("refresh", "Refresh now", "instances, prices and volumes"),
    ("region", "Switch region", "on AWS or the sandbox"),
    ("help", "Help", "keys and commands"),
    ("command_line", "Command line", "type any cloudsh command"),
    ("quit", "Quit", "boxes keep running"),
)


class ActionsProvider(Provider):
    def _entries(self) -> list[tuple[str, str, object]]:
        app = cast("AppHost", self.app)
        # Each action belongs to the pane whose keys run it, or to the app.
        owners: tuple[DOMNode, ...] = (app.main(InstancesPane), app.main(VolumesPane), app)
        out: list[tuple[str, str, object]] = []
        for action, title, help_text in (*ACTIONS, *jobs_palette_entries(), *STORAGE_PALETTE):
            owner = next((n for n in owners if hasattr(n, f"action_{action}")), app)
            if owner.check_action(action, ()) is False:  # e.g. "attach" on a snapshot row, no `freeze`
                continue
            out.append((title, help_text, partial(app.run_action, action, owner)))
        for name, cmd in sorted(REGISTRY.commands.items()):
            out.append((f":{name}", cmd.summary, partial(self._type_command, name)))
        return out

    def _type_command(self, name: str) -> None:
        from cloudsh.tui.widgets import CommandLine

        line = self.app.query_one(CommandLine)
        line.value = name + " "
        line.cursor_position = len(line.value)
        line.focus()

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            if not title.startswith(":"):
                yield DiscoveryHit(title, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)  # type: ignore[arg-type]
