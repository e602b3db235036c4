"""The app's first listing, fetched by a forked child while the app itself starts.

A cold start spends ~350 ms importing Textual and building the screen, and ~450 ms
importing botocore, building a client and listing instances. In one process those add
up; forked before Textual is imported, a child lists on the second core while the app
paints the frame. Forking (not spawning) spares the child an interpreter start and
the imports the parent already did: the listing lands ~120 ms sooner.

The child runs `cloudsh ls --json` (the same command code) with stdin and stderr on
/dev/null and a session of its own, so it never reads or draws on the terminal. It is
forked while the process has one thread. Whatever goes wrong in it, the app lists the
normal way.

Imports nothing heavy: it runs before the app imports Textual or botocore. It lives
beside the CLI, not in `tui/`: nothing in it is Textual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudsh.frontend import GlobalOptions


class Prefetch:
    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd  # the read end of the child's stdout

    @classmethod
    def start(cls, opts: GlobalOptions) -> Prefetch | None:
        """Fork the child; None where there is no fork (the app then lists itself)."""
        if not hasattr(os, "fork"):
            return None
        # The app imports the command registry anyway (~35 ms): imported before the fork,
        # the child inherits it instead of importing it again on its critical path.
        import cloudsh.commands  # noqa: F401
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child, which never returns
            status = 1
            try:
                os.close(read_end)
                os.setsid()  # no controlling terminal: nothing in here can prompt on it
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(write_end, 1)
                os.dup2(null, 2)
                from cloudsh.frontend import run_command

                status = asyncio.run(run_command(opts, ["ls", "--json"]))
                sys.stdout.flush()
                if status == 0:
                    # The listing is all there: end the app's read now rather than at
                    # exit, after the kernel has freed this process (~20 ms on a first
                    # start, which parsed the big botocore models).
                    os.close(1)
                    os.close(write_end)
            finally:
                os._exit(status)  # no interpreter teardown, no atexit of the parent's
        os.close(write_end)
        return cls(pid, read_end)

    async def records(self) -> list[dict[str, Any]] | None:
        """The child's records, or None if it failed. The pipe is read on the event loop
        (no thread for the app to wait for on exit); cancelled, the child is killed."""
        loop = asyncio.get_running_loop()
        os.set_blocking(self.fd, False)
        chunks: list[bytes] = []
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if chunk:
                chunks.append(chunk)
            elif not done.done():
                done.set_result(None)

        loop.add_reader(self.fd, readable)
        try:
            await done
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)  # killed: gone at once
            raise
        finally:
            loop.remove_reader(self.fd)
            os.close(self.fd)
        try:
            status = self._reap(loop)
        except ChildProcessError:
            return None
        if status != 0:
            return None
        try:
            records = json.loads(b"".join(chunks))
        except ValueError:
            return None
        return records if isinstance(records, list) else None

    def _reap(self, loop: asyncio.AbstractEventLoop) -> int:
        """The child's wait status once the pipe has closed. A child still there closed
        the pipe itself, which it does only after listing successfully, and is exiting:
        it is reaped once it is gone, without holding up the event loop."""
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            return status
        try:
            exited = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd here (not Linux): wait, as briefly
            return os.waitpid(self.pid, 0)[1]

        def reap() -> None:
            loop.remove_reader(exited)
            os.close(exited)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)

        loop.add_reader(exited, reap)
        return 0
