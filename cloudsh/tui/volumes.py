"""The Volumes pane (volumes, snapshots and images, with what each costs a month) and
the keys acting on its highlighted row: attach, detach, snapshot and delete a volume;
make a volume from a snapshot; launch a box from an image; delete either.

The pane owns those keys; what they do is `StorageActions`. Each one ends in a command of the registry (`run_command`), so the progress lines,
the confirmation questions (delete asks, showing the storage freed) and the refusals are
the CLI's own. The dialogs only gather the arguments, from data the app already has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, DataTable, Input, OptionList, Static
from textual.widgets.option_list import Option

from cloudsh.commands.views import money
from cloudsh.models import Image, Snapshot, Volume
from cloudsh.tui.data import image_month, snapshot_month, volume_month
from cloudsh.tui.dialog import Dialog
from cloudsh.tui.state import BoxState
from cloudsh.tui.widgets import Fields, LineTable

if TYPE_CHECKING:
    from cloudsh.tui.host import AppHost

StorageItem = Volume | Snapshot | Image
T = TypeVar("T", Volume, Snapshot, Image)

#: action -> the kinds of row it applies to (the footer shows it only on those rows).
STORAGE_ACTIONS: dict[str, tuple[type, ...]] = {
    "volume_attach": (Volume,),
    "volume_detach": (Volume,),
    "volume_snapshot": (Volume,),
    "snapshot_restore": (Snapshot,),
    "image_launch": (Image,),
    "storage_delete": (Volume, Snapshot, Image),
}

#: Keys of the Volumes pane.
STORAGE_BINDINGS: list[BindingType] = [
    Binding("a", "volume_attach", "Attach", id="volume_attach", tooltip="Attach the volume to a running box"),
    Binding("d", "volume_detach", "Detach", id="volume_detach", tooltip="Unmount and detach the volume"),
    Binding("n", "volume_snapshot", "Snapshot", id="volume_snapshot", tooltip="Snapshot the volume"),
    Binding("v", "snapshot_restore", "New volume", id="snapshot_restore", tooltip="Make a volume from the snapshot"),
    Binding("l", "image_launch", "Launch", id="image_launch", tooltip="Launch a box from the image"),
    Binding("x,delete", "storage_delete", "Delete", id="storage_delete", tooltip="Delete it (asks first)"),
]

#: (action, title, help) for the command palette.
PALETTE_ACTIONS = (
    ("volume_attach", "Attach the highlighted volume to a box", "pick a running box in its AZ; optional mount dir"),
    ("volume_detach", "Detach the highlighted volume", "unmounts first; refused while programs use it"),
    ("volume_snapshot", "Snapshot the highlighted volume", "waits until the snapshot is complete"),
    ("snapshot_restore", "New volume from the highlighted snapshot", "in the AZ of the box it is for"),
    ("image_launch", "Launch a box from the highlighted image", "thaw a frozen box"),
    ("storage_delete", "Delete the highlighted volume, snapshot or image", "asks first, showing what it frees"),
)


def _label(item: StorageItem) -> str:
    return item.name or item.id


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    value: str = ""
    placeholder: str = ""


class StorageForm(Dialog[dict[str, Any] | None]):
    """A small form: text fields, an optional list to pick one from, an optional checkbox.

    Dismisses with {field key: text, "choice": option id, "check": bool}, or None.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Cancel", id="form_cancel")]

    def __init__(
        self,
        title: str,
        fields: Sequence[Field] = (),
        *,
        choices: Sequence[tuple[str, str]] | None = None,
        choice_label: str = "",
        check: tuple[str, str] | None = None,
        note: str = "",
        ok: str = "OK",
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = list(fields)
        self.choices = list(choices) if choices is not None else None
        self.choice_label = choice_label
        self.check = check
        self.note = note
        self.ok = ok

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="storage-form"):
            yield Static(self.title_text, id="form-title")
            if self.choices is not None:
                yield Static(self.choice_label, classes="form-label")
                if self.choices:
                    yield OptionList(*(Option(label, id=key) for key, label in self.choices), id="form-choices")
                else:
                    yield Static("  (none)", classes="form-none")
            for f in self.fields:
                yield Static(f.label, classes="form-label")
                yield Input(f.value, placeholder=f.placeholder, id=f"form-{f.key}")
            if self.check is not None:
                yield Checkbox(self.check[1], id="form-check")
            if self.note:
                yield Static(self.note, id="form-note")
            with Horizontal(id="buttons"):
                yield Button(f"{self.ok} (enter)", id="ok", variant="primary", disabled=self.choices == [])
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        if self.choices:
            self.query_one(OptionList).focus()
        elif self.fields:
            self.query_one(f"#form-{self.fields[0].key}", Input).focus()

    def answer(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {f.key: self.query_one(f"#form-{f.key}", Input).value.strip() for f in self.fields}
        if self.choices is not None:
            if not self.choices:
                return None
            picked = self.query_one(OptionList).highlighted
            out["choice"] = self.choices[picked if picked is not None else 0][0]
        if self.check is not None:
            out["check"] = self.query_one(Checkbox).value
        return out

    def _submit(self) -> None:
        if self.choices == []:
            return
        self.dismiss(self.answer())

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        # Enter on the list: the next field if there is one, else done.
        if self.fields:
            self.query_one(f"#form-{self.fields[0].key}", Input).focus()
        else:
            self._submit()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)


class StorageActions:
    """What the Volumes pane's keys do, through the app's commands and dialogs."""

    def __init__(self, app: AppHost) -> None:
        self.app = app

    def attach(self, vol: Volume) -> None:
        app = self.app
        boxes = [r for r in app.state.rows if r.state is BoxState.RUNNING and (not vol.az or r.az == vol.az)]
        choices = [(r.label, f"{r.label}  {r.type}  {r.id}") for r in boxes]

        def chosen(answer: dict[str, Any] | None) -> None:
            if not answer:
                return
            words = ["volume", "attach", vol.id, answer["choice"]]
            if answer.get("mount"):
                words += ["--mount", answer["mount"]]
            if answer.get("check"):
                words.append("--format")
            app.run_command(words, f"attach {_label(vol)} to {answer['choice']}")

        app.push_screen(
            StorageForm(
                f"Attach volume {_label(vol)} ({vol.size_gb} GB, {vol.az})",
                [Field("mount", "Mount on (optional)", placeholder="/mnt/data")],
                choices=choices,
                choice_label=f"Running boxes in {vol.az or 'its AZ'}:",
                check=("format", "Format it (ext4; refused if it already has a filesystem)"),
                note="" if choices else f"No running box in {vol.az}: a volume attaches only in its own AZ.",
                ok="Attach",
            ),
            chosen,
        )

    def detach(self, vol: Volume) -> None:
        self.app.run_command(["volume", "detach", vol.id], f"detach {_label(vol)}")

    def snapshot(self, vol: Volume) -> None:
        self.app.run_command(["snapshot", vol.id], f"snapshot {_label(vol)}")

    def restore(self, snap: Snapshot) -> None:
        app = self.app
        boxes = [r for r in app.state.rows if r.state not in (BoxState.TERMINATED, BoxState.SHUTTING_DOWN)]
        choices = [(f"box:{r.label}", f"for {r.label}  ({r.az})") for r in boxes]
        zones = sorted({r.az for r in boxes if r.az} | {"us-east-1a"})
        choices += [(f"az:{z}", f"in {z}, no box yet") for z in zones]

        def chosen(answer: dict[str, Any] | None) -> None:
            if not answer:
                return
            name = answer["name"] or f"{_label(snap)}-vol"
            size = answer["size"] or str(snap.size_gb)
            where, _, value = str(answer["choice"]).partition(":")
            words = ["volume", "create", name, size, "--snapshot", snap.id, "--for" if where == "box" else "--az", value]
            app.run_command(words, f"volume {name} from {_label(snap)}")

        app.push_screen(
            StorageForm(
                f"New volume from snapshot {_label(snap)} ({snap.size_gb} GB)",
                [Field("name", "Volume name", f"{_label(snap)}-vol"), Field("size", "Size in GB", str(snap.size_gb))],
                choices=choices,
                choice_label="Where (a volume attaches only to boxes in its AZ):",
                ok="Create",
            ),
            chosen,
        )

    def launch(self, img: Image) -> None:
        app = self.app

        def chosen(answer: dict[str, Any] | None) -> None:
            if not answer or not answer["name"]:
                return
            words = ["launch", answer["name"], "--image", img.id]
            if answer["type"]:
                words += ["--type", answer["type"]]
            app.run_command(words, f"launch {answer['name']} from {_label(img)}")

        app.push_screen(
            StorageForm(
                f"Launch a box from image {_label(img)} ({img.architecture})",
                [Field("name", "Name of the new box", placeholder="e.g. train2"),
                 Field("type", "Instance type (optional)", placeholder="default: your config's type")],
                ok="Launch",
            ),
            chosen,
        )

    def delete(self, item: StorageItem) -> None:
        # The commands ask (through the app's confirmation dialog) and say what is freed.
        kind = "volume" if isinstance(item, Volume) else "snapshot" if isinstance(item, Snapshot) else "image"
        self.app.run_command([kind, "delete", item.id], f"delete {kind} {_label(item)}")


def applies(action: str, item: StorageItem | None) -> bool:
    """Whether the Volumes pane's `action` applies to this row (the footer hides it if not)."""
    kinds = STORAGE_ACTIONS.get(action)
    if kinds is None:
        return True
    if not isinstance(item, kinds):
        return False
    if isinstance(item, Volume) and action == "volume_attach":
        return item.attached_to is None
    if isinstance(item, Volume) and action == "volume_detach":
        return item.attached_to is not None
    return True


# -- the pane -----------------------------------------------------------------------


class StorageTable(LineTable):
    HEADER = ("Kind", "Name", "Size", "State", "Attached/From", "$/month")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]


def storage_fields(row: tuple[Volume | Snapshot | Image, str, float | None]) -> Fields:
    """A volume's, snapshot's or image's row: with where it is attached (or comes
    from) and what it costs a month, which the pane works out."""
    item, where, month = row
    kind = "volume" if isinstance(item, Volume) else "snapshot" if isinstance(item, Snapshot) else "image"
    size = f"{item.size_gb} GB" if isinstance(item, Volume | Snapshot) else "-"
    return ((kind, ""), (item.name or item.id, ""), (size, ""), (item.state, ""), (where, ""), (money(month, ""), ""))


class VolumesPane(Vertical):
    """Volumes, snapshots and images with what each costs a month; the keys acting on
    the highlighted row are the pane's, shown only on rows they apply to."""

    BINDINGS: ClassVar[list[BindingType]] = STORAGE_BINDINGS

    def __init__(self, actions: StorageActions, **kw: Any) -> None:
        super().__init__(**kw)
        self.actions = actions
        self.items: dict[str, StorageItem] = {}
        self._titles = ["Volumes", ""]  # the storage's $/month, and the orphans' ("" when none)
        self._kind: type | None = None

    def compose(self) -> ComposeResult:
        yield StorageTable(id="volumes-table")

    def highlighted(self) -> StorageItem | None:
        key = self.query_one(StorageTable).highlighted_key()
        return self.items.get(key) if key else None

    @on(DataTable.RowHighlighted, "#volumes-table")
    def _row_changed(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        # The footer shows the keys of this kind of row. Redrawing it mounts a widget per
        # key (~20 ms), so only when the kind changes, not on every row.
        kind = type(self.highlighted())
        if kind is not self._kind:
            self._kind = kind
            self.screen.refresh_bindings()

    def show(self, volumes: list[Volume], snapshots: list[Snapshot], images: list[Image],
             names: dict[str, str] | None = None, *, region: str = "us-east-1") -> None:
        names = names or {}
        snaps = {s.id: s for s in snapshots}
        self.items = {**{v.id: v for v in volumes}, **snaps, **{i.id: i for i in images}}
        rows: list[tuple[str, tuple[StorageItem, str, float | None]]] = [
            *((v.id, (v, names.get(v.attached_to or "", v.attached_to or "-"), volume_month(v, region))) for v in volumes),
            *((s.id, (s, s.volume_id, snapshot_month(s, region))) for s in snapshots),
            *((i.id, (i, i.id, image_month(i, snaps, region))) for i in images),
        ]
        # An image's cost is its snapshots' (listed above it): counted once.
        total = sum(month or 0.0 for _, (item, _, month) in rows if not isinstance(item, Image))
        self._titles[0] = f"Volumes · {money(total, '/mo')}"  # "/mo": the title fits a 60-column pane
        self.border_title = " · ".join(t for t in self._titles if t)
        self.query_one(StorageTable).show_rows(rows, storage_fields)

    def show_orphans(self, count: int, per_month: float) -> None:
        """The monthly total of what bills with nothing using it, in the title (`orphans`)."""
        orphans = f"{count} orphan{'s' if count != 1 else ''}"
        self._titles[1] = f"{orphans} {money(per_month, '/mo')} (:orphans)" if count else ""
        self.border_title = " · ".join(t for t in self._titles if t)

    # -- keys ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return applies(action, self.highlighted() if self.is_mounted else None)

    def _item(self, kind: type[T]) -> T | None:
        item = self.highlighted()
        if not isinstance(item, kind):
            self.notify(f"highlight a {kind.__name__.lower()} in the Volumes pane first", severity="warning")
            return None
        return item

    def action_volume_attach(self) -> None:
        if vol := self._item(Volume):
            self.actions.attach(vol)

    def action_volume_detach(self) -> None:
        if vol := self._item(Volume):
            self.actions.detach(vol)

    def action_volume_snapshot(self) -> None:
        if vol := self._item(Volume):
            self.actions.snapshot(vol)

    def action_snapshot_restore(self) -> None:
        if snap := self._item(Snapshot):
            self.actions.restore(snap)

    def action_image_launch(self) -> None:
        if img := self._item(Image):
            self.actions.launch(img)

    def action_storage_delete(self) -> None:
        item = self.highlighted()
        if item is None:
            self.notify("highlight a volume, snapshot or image in the Volumes pane first", severity="warning")
            return
        self.actions.delete(item)


__all__ = ["PALETTE_ACTIONS", "STORAGE_ACTIONS", "STORAGE_BINDINGS", "Field", "StorageActions", "StorageForm",
           "StorageTable", "VolumesPane", "applies"]
