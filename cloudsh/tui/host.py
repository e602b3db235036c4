"""What panes, screens and their helpers may use of the app.

They are typed against `AppHost`, an `App` with these parts, never against
`CloudshApp`: the app imports them, and none of them imports the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from textual.app import App
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.widget import Widget

from cloudsh.errors import CloudshError
from cloudsh.tui.dialog import Palette
from cloudsh.tui.messages import ActivityLogged
from cloudsh.tui.state import AppState
from cloudsh.tui.tunnels import TunnelManager

if TYPE_CHECKING:
    from cloudsh.commands.registry import Context
    from cloudsh.services.backend import Backend
    from cloudsh.tui.handoff import Handoff

W = TypeVar("W", bound=Widget)
#: A toast shows at most this much; the full text is in the activity log.
TOAST_CHARS = 160
TOAST_TITLE_CHARS = 48
#: Seconds a command typed while the app connects waits for the connection (starting
#: the sandbox takes a few seconds; a silent cloud is reported by the connection itself).
CONNECT_WAIT_S = 60.0
PALETTE_ID = "--command-palette"


class JobsPolling(Protocol):
    def poll(self, *, now: bool = False) -> None:
        """List jobs when due (`now=True`: right away)."""


class AppHost(App[int]):
    """The app as its parts see it; `CloudshApp` implements the rest."""

    def action_command_palette(self) -> None:
        # A palette closed a moment ago keeps its id until it is removed: a ctrl+p typed
        # right after escape waits for that (a second one with the same id would crash).
        closing = self._nodes._get_by_id(PALETTE_ID) is not None  # registered screens (children: the top one)
        if self.use_command_palette and not closing and not Palette.is_open(self):  # type: ignore[arg-type]
            self.push_screen(Palette(id=PALETTE_ID))

    state: AppState
    tunnels: TunnelManager
    handoff: Handoff
    jobs_poller: JobsPolling
    backend_factory: Callable[[], Backend]
    clock: Callable[[], datetime]

    @property
    def backend(self) -> Backend | None:
        """The connected cloud, None until connected."""
        return self.state.connection.backend

    def main(self, selector: type[W]) -> W:
        """A widget of the main screen, whichever screen (dialog) is on top."""
        if not self.screen_stack:  # shutting down: the screens are gone
            raise NoMatches(f"no main screen for {selector.__name__}")
        return self.screen_stack[0].query_one(selector)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A toast, clipped so a long line (a 500-character name) cannot cover the panes;
        the activity log keeps every line whole."""
        short, short_title = clip(message, TOAST_CHARS), clip(title, TOAST_TITLE_CHARS)
        clipped = (short, short_title) != (message, title)  # markup may be cut mid-tag: show it plain
        super().notify(short, title=short_title, severity=severity, timeout=timeout, markup=markup and not clipped)

    def log_line(self, text: str, kind: str = "out") -> None:
        """One line in the activity log."""
        self.post_message(ActivityLogged(text, kind))

    def context(self, out: Any) -> Context:
        """A command `Context` whose output goes to `out`."""
        raise NotImplementedError

    async def connected(self, timeout: float = CONNECT_WAIT_S) -> Backend:
        """The backend, waiting while the app is still connecting (a command typed right
        after start-up runs once the cloud answers); else as `require_backend`."""
        deadline = time.monotonic() + timeout
        while self.state.connection.awaited and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.require_backend()

    def require_backend(self) -> Backend:
        """The connected cloud, or a CloudshError saying it is not connected yet."""
        if self.backend is None:
            raise CloudshError("not connected to the cloud yet", "wait a moment and try again")
        return self.backend

    def refresh_instances(self) -> None:
        """List the instances again, in a worker."""
        raise NotImplementedError

    def run_line(self, line: str) -> None:
        """Run a command line as typed on the command line."""
        raise NotImplementedError

    def run_command(self, words: Sequence[str], label: str | None = None) -> None:
        """Run a command (already split into words) in a worker."""
        raise NotImplementedError


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
