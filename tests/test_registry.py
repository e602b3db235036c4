"""One way to run a line: `Registry.prepare` decides quoting, help and the backend need
for every front end (the CLI, the REPL and the TUI test the same lines end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudsh.commands import REGISTRY, Context
from cloudsh.errors import UsageError


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, text: str = "") -> None:
        self.lines.append(text)

    def json(self, data: Any) -> None: ...
    def info(self, text: str) -> None: ...
    def write(self, chunk: str, *, err: bool = False) -> None: ...


def test_blank_lines_are_nothing_and_bad_quotes_one_usage_error() -> None:
    assert REGISTRY.prepare_line("   ") is None
    with pytest.raises(UsageError, match="cannot parse the line.*check the quotes"):
        REGISTRY.prepare_line('start "box')


def test_help_in_every_spelling_is_the_same_text_and_needs_no_cloud() -> None:
    asked = [REGISTRY.prepare_line(line) for line in ("help resize", "resize --help", "resize -h")]
    texts = {p.help_text for p in asked if p is not None}
    assert len(texts) == 1 and next(iter(texts), "").startswith("usage: cloudsh resize")
    assert all(p is not None and not p.needs_backend and p.command is REGISTRY.commands["resize"] for p in asked)
    overview = REGISTRY.prepare(["help"], overview="Commands:\n{commands}")
    assert overview.command is None and overview.help_text == "Commands:\n" + REGISTRY.help_text()
    assert REGISTRY.prepare(["--help"]).help_text == REGISTRY.help_text()


def test_usage_errors_come_from_preparing_not_running() -> None:
    with pytest.raises(UsageError, match="did you mean `launch`"):
        REGISTRY.prepare_line("lauch x")
    with pytest.raises(UsageError, match="resize: the following arguments are required"):
        REGISTRY.prepare_line("resize box")


def test_the_backend_need_is_declared_with_the_command() -> None:
    def need(line: str) -> bool:
        prepared = REGISTRY.prepare_line(line)
        assert prepared is not None and prepared.namespace is not None
        return prepared.needs_backend

    assert not any(need(f"sandbox {sub}") for sub in ("up", "down", "status", "env"))
    # It plays the interruption on a box of the cloud it is connected to.
    assert need("sandbox interrupt box")
    assert need("ls") and need("start box")


async def test_a_prepared_line_runs_through_the_context() -> None:
    out = _Out()

    def no_cloud() -> Any:
        raise AssertionError("help must not connect")

    prepared = REGISTRY.prepare_line("help ls")
    assert prepared is not None
    assert await prepared.run(Context(out=out, backend_factory=no_cloud)) == 0
    assert out.lines == [prepared.help_text]
