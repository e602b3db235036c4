"""The base of the app's dialogs (answered once), and its command palette.

Keys arrive in bursts (a paste, a fast typist, `y` then `enter`): a dialog's second
answer would call its callback again (a second terminate) and pop the screen under it.
Textual's `dismiss` pops whatever is on top, so a dialog no longer on top ignores it.
"""

from __future__ import annotations

import contextlib
from typing import TypeVar

from textual.await_complete import AwaitComplete
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.screen import ModalScreen

T = TypeVar("T")


class Dialog(ModalScreen[T]):
    def dismiss(self, result: T | None = None) -> AwaitComplete:
        if self.app.screen is not self:
            return AwaitComplete()
        return super().dismiss(result)


class Palette(CommandPalette):
    """Textual's command palette, answered once like a `Dialog`; its search can finish
    just after it closed (ctrl+p then escape in one burst): its list is gone by then,
    which is no error."""

    def dismiss(self, result: None = None) -> AwaitComplete:
        if self.app.screen is not self:
            return AwaitComplete()
        return super().dismiss(result)

    def _action_command_list(self, action: str) -> None:
        # page up/down while the search refills the list: its lines are not laid out yet.
        with contextlib.suppress(KeyError):
            super()._action_command_list(action)

    def _watch__list_visible(self) -> None:
        with contextlib.suppress(NoMatches):
            super()._watch__list_visible()
