"""`cloudsh repl`: the command language in a prompt_toolkit shell.

The prompt never waits for the cloud: the backend is created and the completion index
and burn rate are refreshed by background tasks, and completion reads only the last
index. A command runs as an asyncio task; Ctrl-C cancels that task, not the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer
from prompt_toolkit.completion import Completion as PtCompletion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import HTML
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.styles import Style

from cloudsh.commands import REGISTRY, Context, Prepared
from cloudsh.commands.complete import (
    BUILTINS,
    CompletionIndex,
    command_help,
    complete,
    index_from_json,
    index_to_json,
)
from cloudsh.commands.views import money
from cloudsh.errors import CloudshError
from cloudsh.frontend import StdOutput, fail, say_budget

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend

PROMPT = "cloudsh> "
#: How often the completion index and burn rate are re-read while the shell is idle.
REFRESH_S = 30.0
EXTRA = {**BUILTINS, "exit": "leave the shell (or Ctrl-D)"}
#: What a bare `help` shows.
OVERVIEW = "Commands (Tab completes, `help COMMAND` for one):\n{commands}"
STYLE = Style.from_dict({"bottom-toolbar": "noreverse bg:#262626 #d0d0d0", "mode": "bold #ffaf00"})


class Shell:
    """The state behind the prompt: backend, completion index, toolbar facts."""

    def __init__(self, backend_factory: Callable[[], Backend], cache: Path | None = None) -> None:
        self.backend_factory = backend_factory
        self.index = CompletionIndex()
        #: Last session's index: completion works before the first listing returns.
        self.cache = cache
        self._cached_label = ""
        self._load_cache()
        self.label = "connecting…"
        self.burn = ""
        self._backend: Backend | None = None
        self._backend_task: asyncio.Task[Backend] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self.session: PromptSession[str] | None = None
        self.current: asyncio.Task[int] | None = None

    # -- background ---------------------------------------------------------------

    def _load_cache(self) -> None:
        if self.cache is None:
            return
        try:
            self._cached_label, self.index = index_from_json(json.loads(self.cache.read_text()))
        except (OSError, ValueError):
            return  # no cache yet, or a broken one: the first refresh writes it

    def _save_cache(self, label: str) -> None:
        if self.cache is None:
            return
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(index_to_json(self.index, label)))
            tmp.replace(self.cache)
        except OSError:
            return  # the cache only speeds up the next start

    async def backend(self) -> Backend:
        """The backend, created once in a thread (starting the sandbox can take seconds)."""
        if self._backend is not None:
            return self._backend
        if self._backend_task is None or (self._backend_task.done() and self._backend_task.exception()):
            self._backend_task = asyncio.create_task(asyncio.to_thread(self.backend_factory))
        self._backend = await asyncio.shield(self._backend_task)
        self.label = self._backend.label
        if self._cached_label and self._cached_label != self.label:
            self.index = CompletionIndex()  # last session's names belong to another cloud
        if self._backend.notice:
            # Why the sandbox was picked (no AWS credentials): said once, above the prompt.
            notice, self._backend.notice = self._backend.notice, ""
            await run_in_terminal(lambda: sys.stderr.write(f"cloudsh: {notice}\n"))
        self._invalidate()
        return self._backend

    def refresh(self) -> None:
        """Re-read the index and burn rate in the background, unless already doing so."""
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        from cloudsh.commands.complete import build_index
        from cloudsh.commands.views import burn_rate
        from cloudsh.ops.jobs import catch_up
        from cloudsh.ops.queries import listing

        try:
            backend = await self.backend()
        except CloudshError as exc:
            self.label = f"offline: {exc.message}"
            self._invalidate()
            return
        # One DescribeInstances feeds both the completion index and the burn rate.
        try:
            insts = await backend.ec2.list_instances()
        except CloudshError:
            insts = None  # the index still lists the other kinds; no burn rate this time
        index, records = await asyncio.gather(
            build_index(backend, insts),
            listing(backend, instances=insts) if insts is not None else asyncio.sleep(0),  # None
            return_exceptions=True,
        )
        if isinstance(index, CompletionIndex):
            self.index = index
            self._cached_label = backend.label
            self._save_cache(backend.label)
        if isinstance(records, list):
            running = sum(1 for r in records if r["state"] == "running")
            self.burn = f"{running} running · {money(burn_rate(records))}"
        self._invalidate()
        # Then boxes EC2 restarted under a job send their results home (after the index:
        # completion must not wait for copies).
        with contextlib.suppress(CloudshError):
            await catch_up(backend, insts or [])

    async def refresh_forever(self) -> None:
        # Let the first prompt render before boto3 is imported in the backend thread.
        await asyncio.sleep(0.05)
        while True:
            self.refresh()
            await asyncio.sleep(REFRESH_S)

    def _invalidate(self) -> None:
        app = self.session.app if self.session else None
        if app is not None and app.is_running:
            app.invalidate()

    # -- prompt pieces ---------------------------------------------------------------

    def toolbar(self) -> HTML:
        text = ""
        if self.session is not None:
            doc = self.session.default_buffer.document
            text = command_help(doc.text, doc.cursor_position) or ""
        if not text:
            text = "Tab completes · `help` lists commands · Ctrl-C cancels · Ctrl-D exits"
        status = f"<mode>{_esc(self.label)}</mode>" + (f" · {_esc(self.burn)}" if self.burn else "")
        return HTML(f"{status} │ {_esc(text)}")

    # -- running commands ---------------------------------------------------------------

    async def execute(self, line: str) -> int:
        """Run one line; errors are printed as one line and never end the shell."""
        try:
            prepared = REGISTRY.prepare_line(line, overview=OVERVIEW)
        except CloudshError as exc:
            return fail(exc)
        if prepared is None:
            return 0
        task = asyncio.create_task(self._run(prepared))
        # A terminal program (ssh) owns Ctrl-C while it runs; otherwise Ctrl-C cancels the command.
        self.current = None if prepared.takes_terminal else task
        try:
            status = await task
            if status:
                sys.stderr.write(f"(exit status {status})\n")
            return status
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            sys.stdout.flush()
            sys.stderr.write("\ncancelled\n")
            return 130
        except Exception as exc:  # noqa: BLE001 - every error is one line, the shell goes on
            return fail(exc)
        finally:
            self.current = None
            self.refresh()

    def interrupt(self) -> None:
        """SIGINT (Ctrl-C while a command runs; at the prompt it is a key, not a signal)."""
        if self.current is not None:
            self.current.cancel()

    async def _run(self, prepared: Prepared) -> int:
        ctx = Context(out=StdOutput(), backend_factory=self._sync_backend, confirm=self.confirm, terminal=_terminal)
        if prepared.needs_backend:
            ctx._backend = await self.backend()
        try:
            return await prepared.run(ctx)
        finally:
            if ctx._backend is not None:
                await say_budget(ctx._backend, "repl", ctx.out.info)

    def _sync_backend(self) -> Backend:
        if self._backend is None:
            raise CloudshError("not connected yet", "try again in a moment")
        return self._backend

    async def confirm(self, question: str) -> bool:
        session: PromptSession[str] = PromptSession()
        try:
            answer = await session.prompt_async(question + " [y/N] ")
        except (KeyboardInterrupt, EOFError):
            return False
        return answer.strip().lower() in ("y", "yes")


async def _terminal(argv: Sequence[str]) -> int:
    proc = await asyncio.create_subprocess_exec(*argv)
    return await proc.wait()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class IndexCompleter(Completer):
    """prompt_toolkit adapter over `complete()`; reads whatever index is current."""

    def __init__(self, index: Callable[[], CompletionIndex]) -> None:
        self.index = index

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[PtCompletion]:
        before = document.text_before_cursor
        for c in complete(before, None, self.index(), builtins=EXTRA):
            yield PtCompletion(
                c.text, start_position=c.start - len(before), display=c.display or c.text, display_meta=c.meta
            )


def _paths() -> tuple[FileHistory | InMemoryHistory, Path | None]:
    """Persistent history (state dir) and the completion cache (cache dir)."""
    from cloudsh.config import Settings

    try:
        settings = Settings.load()
    except CloudshError:
        return InMemoryHistory(), None  # the command that needs settings will say what is wrong
    cache = settings.cache_dir / "completion-index.json"
    try:
        path = settings.state_dir / "repl_history"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileHistory(str(path)), cache
    except OSError:
        return InMemoryHistory(), cache  # a read-only home still gets a working shell


async def _main(backend_factory: Callable[[], Backend]) -> int:
    history, cache = _paths()
    shell = Shell(backend_factory, cache)
    session: PromptSession[str] = PromptSession(
        history=history,
        completer=IndexCompleter(lambda: shell.index),
        complete_while_typing=False,
        bottom_toolbar=shell.toolbar,
        style=STYLE,
    )
    shell.session = session
    refresher = asyncio.create_task(shell.refresh_forever())
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                line = await session.prompt_async(PROMPT)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if line.strip() in ("exit", "quit"):
                break
            # prompt_toolkit takes SIGINT over while prompting and drops ours on the way out.
            loop.add_signal_handler(signal.SIGINT, shell.interrupt)
            await shell.execute(line)
    finally:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        for task in (refresher, shell._refresh_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if shell._backend is not None:
            with contextlib.suppress(CloudshError):
                await shell._backend.close()
    return 0


def run_repl(backend_factory: Callable[[], Backend]) -> int:
    """Run the shell until Ctrl-D or `exit`; returns the exit status."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_main(backend_factory))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
