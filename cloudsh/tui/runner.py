"""Commands run from the app: a typed line or the command an action builds, prepared by
the registry exactly as the REPL and the CLI prepare it, then run in a worker of the app
with its output in the activity pane.

A usage error, a refusal or a failure ends in the app's one error route, reported under
the command's label; success ends in `ActionFinished`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cloudsh.commands.registry import REGISTRY, Prepared
from cloudsh.tui.messages import ActionFinished
from cloudsh.tui.output import PaneOutput

if TYPE_CHECKING:
    from cloudsh.tui.host import AppHost


class CommandRunner:
    def __init__(self, app: AppHost) -> None:
        self.app = app

    def line(self, line: str) -> None:
        line = line.strip()
        if line:
            self._start(line, lambda: REGISTRY.prepare_line(line))

    def command(self, words: Sequence[str], label: str | None = None) -> None:
        self._start(label or " ".join(words), lambda: REGISTRY.prepare(words))

    def _start(self, label: str, prepare: Callable[[], Prepared | None]) -> None:
        # Named by its label: a failure (a usage error too) is reported under it.
        self.app.run_worker(self._run(label, prepare), name=label, group="commands", exit_on_error=False)

    async def _run(self, label: str, prepare: Callable[[], Prepared | None]) -> None:
        app = self.app
        prepared = prepare()
        if prepared is None:
            return
        if prepared.help_text is not None:
            app.log_line(prepared.help_text, "out")
            return
        words = prepared.words
        if prepared.command is not None and prepared.command.name == "tunnel" and not any(
                w.startswith("-") for w in words[1:]):
            # The app keeps tunnels open in the background (see the tunnels view).
            for spec in words[2:]:
                app.tunnels.open_spec(words[1], spec)
            return
        started = time.monotonic()
        out = PaneOutput(app.log_line, started=started)
        app.log_line(f"> {' '.join(words)}", "cmd")
        app.state.schedule.busy += 1
        try:
            if prepared.needs_backend:
                if app.state.connection.awaited:
                    app.log_line("waiting for the cloud to answer…", "info")
                await app.connected()  # not connected (and not connecting): says so, runs nothing
            status = await prepared.run(app.context(out))
        finally:
            out.flush()
            app.state.schedule.busy -= 1
        error = f"exit status {status}" if status else None
        app.post_message(ActionFinished(label, status, time.monotonic() - started, error))


__all__ = ["CommandRunner"]
