"""Boxes cloudsh did not launch: what any front end may do to them.

On a shared account the listing holds colleagues' boxes too (and boxes made in the
console or by a script): none has cloudsh's tag (`Instance.managed`). cloudsh shows them,
marked, but a command naming several boxes never touches one, and a destructive command
(terminate, stop, resize) on one goes ahead only when the box was named by its id, so a
Name that happens to match is never enough. The CLI, the REPL, the app's keys and the
Python API all end in these checks, through the workflows of `ops`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, TypeVar

from cloudsh.errors import UsageError


class Box(Protocol):
    """What the checks read of a box: a `models.Instance`, or a row of the app's pane."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def managed(self) -> bool: ...
    @property
    def owner(self) -> str | None: ...


B = TypeVar("B", bound=Box)


def looks_like(inst: Box) -> str:
    """`"not launched by cloudsh; it looks like alice's"`, or `""` for cloudsh's own box."""
    if inst.managed:
        return ""
    owner = inst.owner
    return "not launched by cloudsh; " + (f"it looks like {owner}'s" if owner else "no tag says whose it is")


def whose(inst: Box) -> str:
    """`"colleague (i-0abc) was not launched by cloudsh; it looks like alice's"`."""
    named = f"{inst.name} ({inst.id})" if inst.name else inst.id
    return f"{named} was {looks_like(inst)}"


def check_acts_on(
    insts: Sequence[Box], verb: str, *, by_id: Collection[str] = (), destructive: bool = True
) -> None:
    """Refuse (`UsageError`, exit status 2) to `verb` a box cloudsh did not launch when it
    is one of several, or, for a destructive verb, when it was not named by its id.

    `by_id` holds what the caller typed (or the ids it was given): a foreign box counts
    as named by its id when its id is among them.
    """
    foreign = [i for i in insts if not i.managed]
    if not foreign:
        return
    inst = foreign[0]
    if len(insts) > 1:
        raise UsageError(
            f"{whose(inst)}, and `{verb}` of several boxes acts only on cloudsh's own",
            f"leave it out, or {verb} it alone by its id: `{verb} {inst.id}`",
        )
    if destructive and inst.id not in by_id:
        raise UsageError(whose(inst), f"name it by its id, {inst.id}, to confirm it is the one you mean")


def own(insts: Sequence[B]) -> list[B]:
    """The boxes cloudsh launched: what a command acting on "all boxes" acts on."""
    return [i for i in insts if i.managed]
