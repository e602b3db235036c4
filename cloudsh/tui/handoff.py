"""Handing the terminal to another program (OpenSSH `ssh`, IPython) and taking it back.

One object owns every hand-off so tests can swap in `RecordingHandoff` and run the
real app with no terminal to give away.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

from textual.app import App


class Handoff(Protocol):
    async def run(self, argv: Sequence[str]) -> int:
        """Run an interactive program on the real terminal; its exit status."""

    async def ipython(self, namespace: dict[str, Any]) -> None:
        """Run IPython with `namespace` preloaded until the user leaves it."""


class SuspendHandoff:
    """The real thing: `App.suspend()` restores the terminal while the program runs."""

    def __init__(self, app: App[Any]) -> None:
        self.app = app

    async def run(self, argv: Sequence[str]) -> int:
        with self.app.suspend():
            # A thread, so the app's loop keeps serving workers (tunnels, refreshes).
            return await asyncio.to_thread(subprocess.call, list(argv))

    async def ipython(self, namespace: dict[str, Any]) -> None:
        from cloudsh.ipython import run_ipython_embedded

        with self.app.suspend():
            # IPython runs its own prompt_toolkit loop: it cannot share Textual's.
            await asyncio.to_thread(run_ipython_embedded, namespace)


class RecordingHandoff:
    """For tests: records what would have been run and answers `status`."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.runs: list[list[str]] = []
        self.namespaces: list[dict[str, Any]] = []

    async def run(self, argv: Sequence[str]) -> int:
        self.runs.append(list(argv))
        return self.status

    async def ipython(self, namespace: dict[str, Any]) -> None:
        self.namespaces.append(namespace)
