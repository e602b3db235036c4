"""The help screen's keys, generated from the bindings: one section per pane and view,
each key as the footer shows it (`:` and `?`, not `colon` and `question_mark`), each key
once, keys that do the same thing on one line (`esc/J`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from textual.app import App
from textual.binding import Binding, BindingType

from cloudsh.commands.registry import REGISTRY
from cloudsh.tui.box import BoxScreen
from cloudsh.tui.instances import InstancesPane, InstancesTable
from cloudsh.tui.jobs import JobsScreen
from cloudsh.tui.volumes import StorageTable, VolumesPane
from cloudsh.tui.widgets import CommandLine, PricesTable

#: (keys, what they do, the binding's id: its name in the `keys` setting, "" if none)
Keys = list[tuple[str, str, str]]

#: Keys no binding of cloudsh's declares (Textual's own, and moving about).
MOVING: Keys = [("tab / shift+tab", "Next / previous pane", ""), ("j k ↑ ↓", "Move", ""),
                ("^p", "Command palette", "")]
#: Said once, in `MOVING`.
CURSOR_ACTIONS = ("cursor_down", "cursor_up", "history(-1)", "history(1)")


def help_sections(app: App[Any]) -> list[tuple[str, Keys]]:
    """(title, [(keys, what they do, id)]) for the help screen, from the bindings of the app,
    its panes and its views. A binding listed in an earlier section (the box view's
    connect is the pane's, by its id) is not repeated."""
    sections: list[tuple[str, Sequence[Sequence[BindingType]], Keys]] = [
        ("Everywhere", [app.BINDINGS], MOVING),
        ("Instances", [InstancesTable.BINDINGS, InstancesPane.BINDINGS], []),
        ("Box view (enter on a box)", [BoxScreen.BINDINGS], []),
        ("Prices", [PricesTable.BINDINGS], []),
        ("Volumes", [StorageTable.BINDINGS, VolumesPane.BINDINGS], []),
        ("Jobs (J)", [JobsScreen.BINDINGS], []),
        ("Command line (:)", [CommandLine.BINDINGS], []),
    ]
    keymap: dict[str, str] = dict(getattr(app, "_keymap", {}))  # as `App.set_keymap` keeps it
    said: set[str] = set()  # binding ids listed in an earlier section
    out: list[tuple[str, Keys]] = []
    for title, groups, extra in sections:
        keys: dict[tuple[str, str, str], list[str]] = {}  # (action, description, id) -> keys, in order
        ids: set[str] = set()
        for group in groups:
            for b in Binding.make_bindings(group):
                if not b.description or b.action in CURSOR_ACTIONS or (b.id and b.id in said):
                    continue
                if b.id == "freeze" and "freeze" not in REGISTRY.commands:
                    continue
                shown = keys.setdefault((b.action, b.description, b.id or ""), [])
                remapped = keymap.get(b.id or "")  # the user's keys (the `keys` setting)
                for key in remapped.split(",") if remapped else [b.key]:
                    if (display := app.get_key_display(replace(b, key=key.strip()))) not in shown:
                        shown.append(display)
                ids.add(b.id or "")
        said |= ids
        lines = [("/".join(ks), description, bid) for (_, description, bid), ks in keys.items()] + extra
        if lines:
            out.append((title, lines))
    return out
