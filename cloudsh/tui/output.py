"""The `Output` of commands run from the app: lines go to the activity pane."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from cloudsh.models import to_jsonable


class PaneOutput:
    """Results as plain lines, progress as `info` lines stamped with the elapsed time."""

    def __init__(self, log: Callable[[str, str], None], *, started: float | None = None) -> None:
        self.log = log
        self.started = time.monotonic() if started is None else started
        self._partial = {False: "", True: ""}

    def print(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            self.log(line, "out")

    def json(self, data: Any) -> None:
        self.print(json.dumps(to_jsonable(data), indent=2))

    def info(self, text: str) -> None:
        self.log(f"[{time.monotonic() - self.started:5.1f}s] {text}", "info")

    def write(self, chunk: str, *, err: bool = False) -> None:
        # Streamed output arrives in arbitrary pieces: show whole lines only.
        buf = self._partial[err] + chunk
        *lines, self._partial[err] = buf.split("\n")
        for line in lines:
            self.log(line, "error" if err else "out")

    def flush(self) -> None:
        for err, rest in self._partial.items():
            if rest:
                self.log(rest, "error" if err else "out")
        self._partial = {False: "", True: ""}
