"""`cloudsh` entry point: global options, then the TUI, the REPL, IPython or one command.

Only parses argv and picks a front end; what the front ends share is in `frontend.py`.
Kept light: `cloudsh --help` and `cloudsh ls` import no Textual, IPython, paramiko or
asyncssh (see bench/startup.py).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from cloudsh import __version__
from cloudsh.frontend import backend_factory, fail, run_command, split_globals, unlock_profile

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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, words = split_globals(args)
        if opts.sandbox is None and os.environ.get("CLOUDSH_SANDBOX"):
            from cloudsh.root import sandbox_requested

            opts.sandbox = sandbox_requested(None)
        if words[:1] in (["--version"], ["-V"]):
            print(f"cloudsh {__version__}")
            return 0
        if not words or words[0] in ("repl", "ipython"):
            unlock_profile(opts)  # an MFA prompt before the app takes the terminal
        if not words:
            from cloudsh.prefetch import Prefetch

            prefetch = Prefetch.start(opts)  # lists on the second core while Textual loads
            from cloudsh.tui.app import run_tui

            return run_tui(backend_factory(opts), prefetch)
        if words[0] == "repl":
            from cloudsh.repl import run_repl

            return run_repl(backend_factory(opts))
        if words[0] == "ipython":
            from cloudsh.ipython import run_ipython

            return run_ipython(backend_factory(opts))
        return asyncio.run(run_command(opts, words, overview=USAGE))
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
