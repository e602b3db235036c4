"""`cloudsh` entry point: global options, then the TUI, the REPL, IPython or one command.

Kept light: `cloudsh --help` and `cloudsh ls` import no Textual, IPython, paramiko or
asyncssh (see bench/startup.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudsh import __version__
from cloudsh.errors import CloudshError, UsageError

USAGE = """\
usage: cloudsh [--sandbox | --aws] [--profile P] [--region R] [COMMAND ...]

A terminal shell for cloud GPU workstations on EC2.

  cloudsh                 the full-screen app
  cloudsh repl            an interactive shell with the same commands
  cloudsh ipython         IPython with `cloud` (the Python API) ready
  cloudsh COMMAND ...     one command, then exit

Global options:
  --sandbox               use the local sandbox cloud (also CLOUDSH_SANDBOX=1)
  --aws                   use real AWS
  --profile P             AWS profile (also AWS_PROFILE)
  --region R              AWS region (also AWS_REGION / AWS_DEFAULT_REGION)
  --version               print the version

With no AWS credentials set up, cloudsh runs on the local sandbox cloud.

Commands:
{commands}

`cloudsh COMMAND --help` tells more about each.
"""


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


async def _confirm(question: str) -> bool:
    sys.stderr.write(question + " [y/N] ")
    sys.stderr.flush()
    answer = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip().lower() in ("y", "yes")


async def _terminal(argv: Sequence[str]) -> int:
    import subprocess

    return await asyncio.to_thread(subprocess.call, list(argv))


def backend_factory(opts: GlobalOptions) -> Any:
    def make() -> Any:
        from cloudsh.config import Settings
        from cloudsh.services.backend import Backend

        return Backend.create(Settings.load(), sandbox=opts.sandbox, profile=opts.profile, region=opts.region)

    return make


def fail(exc: BaseException) -> int:
    """Report an error as one line; unexpected ones go to a log file, not the screen."""
    if isinstance(exc, CloudshError):
        sys.stderr.write(f"cloudsh: {exc}\n")
        return exc.exit_status
    log = _crash_log(exc)
    sys.stderr.write(
        f"cloudsh: unexpected error: {type(exc).__name__}: {exc} "
        f"(this is a bug; details in {log})\n"
    )
    return 1


def _crash_log(exc: BaseException) -> str:
    from cloudsh.config import Settings

    try:
        path = Settings.load().state_dir / "crash.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"--- {datetime.now(UTC).isoformat()} cloudsh {__version__} argv={sys.argv!r}\n")
            f.write("".join(traceback.format_exception(exc)))
        return str(path)
    except Exception:  # the crash log itself must never crash the exit path
        return "(no log written)"


async def run_command(opts: GlobalOptions, words: Sequence[str]) -> int:
    from cloudsh.commands import REGISTRY, Context

    prepared = REGISTRY.prepare(words, overview=USAGE)  # usage errors before any connecting
    tty = sys.stdin.isatty() and sys.stderr.isatty()
    ctx = Context(
        out=StdOutput(),
        backend_factory=backend_factory(opts),
        confirm=_confirm if tty else None,
        terminal=_terminal if sys.stdin.isatty() else None,
    )
    try:
        return await prepared.run(ctx)
    finally:
        if ctx._backend is not None:
            await ctx._backend.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, words = split_globals(args)
        if opts.sandbox is None and os.environ.get("CLOUDSH_SANDBOX"):
            from cloudsh.services.backend import sandbox_requested

            opts.sandbox = sandbox_requested(None)
        if words[:1] in (["--version"], ["-V"]):
            print(f"cloudsh {__version__}")
            return 0
        if not words:
            from cloudsh.tui.prefetch import Prefetch

            prefetch = Prefetch.start(opts)  # lists on the second core while Textual loads
            from cloudsh.tui.app import run_tui

            return run_tui(backend_factory(opts), prefetch)
        if words[0] == "repl":
            from cloudsh.repl import run_repl

            return run_repl(backend_factory(opts))
        if words[0] == "ipython":
            from cloudsh.ipython import run_ipython

            return run_ipython(backend_factory(opts))
        return asyncio.run(run_command(opts, words))
    except KeyboardInterrupt:
        sys.stderr.write("cloudsh: interrupted\n")
        return 130
    except BrokenPipeError:
        # `cloudsh ls | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's own final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as exc:  # noqa: BLE001 - the one place every error is reported
        if isinstance(exc, SystemExit):
            raise
        return fail(exc)


def run() -> None:
    """The `cloudsh` program: `main()`, then a quick exit.

    Once the output is flushed there is nothing left to do, and tearing the interpreter
    down (freeing every botocore model and record one by one) costs ~80 ms, more than
    a tenth of `cloudsh ls`; so the process leaves with `os._exit`. Everything cloudsh
    writes is closed by then (files in `with` blocks, SSH connections closed by
    `run_command`), and the terminal is restored by the TUI and REPL before they return.
    """
    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `cloudsh ls | head`: the reader left, which is fine
        pass
    os._exit(status)
