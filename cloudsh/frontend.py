"""What every front end shares: global options, console output, error reporting, the
crash log, the backend factory and running one command.

The CLI, the REPL, IPython and the app import these from here (never from `cli.py`,
which only parses argv and picks a front end). Kept light: `cloudsh --help` imports
this module, so botocore and the command registry load only when they are used.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudsh import __version__
from cloudsh.errors import CloudshError, UsageError

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend


@dataclass
class GlobalOptions:
    sandbox: bool | None = None
    profile: str | None = None
    region: str | None = None


def split_globals(argv: Sequence[str]) -> tuple[GlobalOptions, list[str]]:
    """Take the global options out of argv (anywhere before a `--`)."""
    opts = GlobalOptions()
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            rest.extend(args[i:])
            break
        if word in ("--sandbox", "--aws"):
            want = word == "--sandbox"
            if opts.sandbox is not None and opts.sandbox != want:
                raise UsageError("--sandbox and --aws contradict each other", "pick one")
            opts.sandbox = want
        elif word in ("--profile", "--region") or word.startswith(("--profile=", "--region=")):
            key, _, value = word.partition("=")
            if not value:
                i += 1
                if i >= len(args) or args[i].startswith("-"):
                    raise UsageError(f"{key} needs a value", f"e.g. {key} {'default' if key == '--profile' else 'us-east-1'}")
                value = args[i]
            setattr(opts, key[2:], value)
        else:
            rest.append(word)
        i += 1
    return opts, rest


class StdOutput:
    """Command output on stdout, notes and progress on stderr."""

    def print(self, text: str = "") -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def json(self, data: Any) -> None:
        from cloudsh.models import to_jsonable

        sys.stdout.write(json.dumps(to_jsonable(data), indent=2) + "\n")
        sys.stdout.flush()

    def info(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def write(self, chunk: str, *, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        stream.write(chunk)
        stream.flush()


async def confirm(question: str) -> bool:
    """Ask a yes/no question on the terminal (stderr, stdin); no is the default."""
    sys.stderr.write(question + " [y/N] ")
    sys.stderr.flush()
    answer = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


async def terminal(argv: Sequence[str]) -> int:
    """Run `argv` on this terminal (interactive ssh and the like); its exit status."""
    import subprocess

    return await asyncio.to_thread(subprocess.call, list(argv))


def backend_factory(opts: GlobalOptions) -> Callable[[], Backend]:
    """Builds the backend the options ask for, when a command first needs one."""

    def make() -> Backend:
        from cloudsh.config import Settings
        from cloudsh.root import connect

        return connect(Settings.load(), sandbox=opts.sandbox, profile=opts.profile, region=opts.region)

    return make


def unlock_profile(opts: GlobalOptions) -> None:
    """Before a full-screen or prompt front end takes the terminal: ask for the MFA code
    of an assume-role profile here, once, rather than under the app from a worker thread.
    Light when there is nothing to ask: botocore loads only for a profile on real AWS."""
    import os

    profile = opts.profile or os.environ.get("AWS_PROFILE")
    if opts.sandbox or not profile:
        return
    from cloudsh.root import unlock_mfa_profile

    unlock_mfa_profile(profile)


def fail(exc: BaseException) -> int:
    """Report an error as one line; unexpected ones go to a log file, not the screen."""
    if isinstance(exc, CloudshError):
        sys.stderr.write(f"cloudsh: {exc}\n")
        return exc.exit_status
    log = crash_log(exc)
    sys.stderr.write(
        f"cloudsh: unexpected error: {type(exc).__name__}: {exc} "
        f"(this is a bug; details in {log})\n"
    )
    return 1


def crash_log(exc: BaseException, state_dir: Path | None = None) -> str:
    """Append `exc`'s traceback to the crash log (in `state_dir`, else the settings'
    state directory); the log's path, for the user to send."""
    from cloudsh.config import Settings

    try:
        path = (state_dir or Settings.load().state_dir) / "crash.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"--- {datetime.now(UTC).isoformat()} cloudsh {__version__} argv={sys.argv!r}\n")
            f.write("".join(traceback.format_exception(exc)))
        return str(path)
    except Exception:  # the crash log itself must never crash the exit path
        return "(no log written)"


async def run_command(opts: GlobalOptions, words: Sequence[str], *, overview: str = "{commands}") -> int:
    """Run one command line (already split into words) on the console; its exit status.
    `overview` is what a bare `help` prints, with the command list at `{commands}`."""
    from cloudsh.commands import REGISTRY, Context

    prepared = REGISTRY.prepare(words, overview=overview)  # usage errors before any connecting
    tty = sys.stdin.isatty() and sys.stderr.isatty()
    ctx = Context(
        out=StdOutput(),
        backend_factory=backend_factory(opts),
        confirm=confirm if tty else None,
        terminal=terminal if sys.stdin.isatty() else None,
    )
    try:
        return await prepared.run(ctx)
    finally:
        if ctx._backend is not None:
            await say_budget(ctx._backend, "cli", ctx.out.info)
            await ctx._backend.close()


async def say_budget(backend: Backend, front: str, say: Callable[[str], None]) -> None:
    """Say once, in `front`, that the month's projection passed 50, 80 or 100 % of the
    budget (nothing when no budget is set); a failure to tell is never an error."""
    from cloudsh.ops.money import check_budget

    try:
        line = await check_budget(backend, front)
    except CloudshError:
        return
    if line:
        say(line)
