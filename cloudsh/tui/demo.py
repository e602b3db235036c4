"""`make demo`: the app on the local sandbox cloud, seeded with a few boxes if it is empty.

Seeding runs through the same command registry as everything else (`launch`), so the
demo shows exactly what a user would get.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence

from cloudsh.commands.registry import Context, dispatch
from cloudsh.config import Settings
from cloudsh.errors import CloudshError
from cloudsh.root import connect
from cloudsh.services.backend import Backend

#: What an empty sandbox gets: a CPU box and a GPU spot box (the names say what they are).
SEED: tuple[tuple[str, ...], ...] = (
    ("launch", "dev", "--type", "t3.medium", "--no-wait"),
    ("launch", "train", "--type", "g5.xlarge", "--spot", "--no-wait"),
)


class _Quiet:
    def print(self, text: str = "") -> None:
        pass

    def json(self, data: object) -> None:
        pass

    def info(self, text: str) -> None:
        sys.stderr.write(f"demo: {text}\n")

    def write(self, chunk: str, *, err: bool = False) -> None:
        pass


async def seed(backend: Backend, commands: Sequence[Sequence[str]] = SEED) -> int:
    """Launch the seed boxes if the cloud has no live instance; how many were launched."""
    if await backend.ec2.list_instances():
        return 0
    ctx = Context(out=_Quiet(), backend_factory=lambda: backend, _backend=backend)
    for words in commands:
        await dispatch(ctx, list(words))
    return len(commands)


def sandbox_factory(settings: Settings | None = None) -> Callable[[], Backend]:
    def make() -> Backend:
        return connect(settings or Settings.load(), sandbox=True)

    return make


def main() -> int:
    factory = sandbox_factory()
    try:
        backend = factory()
        sys.stderr.write(f"demo: local sandbox cloud at {backend.target.endpoint_url}\n")
        asyncio.run(seed(backend))
    except CloudshError as exc:
        sys.stderr.write(f"cloudsh demo: {exc}\n")
        return exc.exit_status
    from cloudsh.tui.app import run_tui

    return run_tui(factory)


if __name__ == "__main__":
    raise SystemExit(main())
