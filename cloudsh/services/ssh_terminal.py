"""A shell on a box wired to this terminal over asyncssh: `connect` when OpenSSH is not
installed. The only SSH code that touches the terminal (raw mode, window size)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

import asyncssh

from cloudsh.errors import SSHError
from cloudsh.models import HostInfo
from cloudsh.services.ssh import (
    BOOT_HINT,
    CHUNK,
    Forward,
    SSHService,
    exit_status,
    reach_error,
    stop_process,
)


async def interactive(ssh: SSHService, host: HostInfo, forwards: Sequence[tuple[int, int]] = ()) -> int:
    """A shell on the box wired to this terminal (when OpenSSH is not installed)."""
    import termios
    import tty

    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    if not os.isatty(fd_in):
        raise SSHError(
            "an interactive session needs a terminal",
            "use `cloudsh run NAME -- CMD` in scripts",
        )
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(fd_in)
    proc: asyncssh.SSHClientProcess[bytes] | None = None
    opened: list[Forward] = []
    winch = False
    try:
        for local_port, remote_port in forwards:
            opened.append(await ssh.forward(host, local_port, remote_port))
        cols, rows = os.get_terminal_size(fd_in)

        async def open_(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[bytes]:
            return await conn.create_process(
                encoding=None,
                request_pty="force",
                term_type=os.environ.get("TERM", "xterm-256color"),
                term_size=(cols, rows),
            )

        try:
            proc = await ssh.channel(host, open_)
        except (OSError, asyncssh.Error) as exc:
            raise reach_error(host, exc) from None
        running = proc

        def on_input() -> None:
            data = os.read(fd_in, CHUNK)
            if data:
                running.stdin.write(data)
            else:
                loop.remove_reader(fd_in)
                running.stdin.write_eof()

        def on_resize() -> None:
            c, r = os.get_terminal_size(fd_in)
            running.change_terminal_size(c, r)

        tty.setraw(fd_in)
        loop.add_reader(fd_in, on_input)
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGWINCH, on_resize)
            winch = True
        try:
            while chunk := await running.stdout.read(CHUNK):
                os.write(fd_out, chunk)
            await running.wait_closed()
        except (OSError, asyncssh.Error) as exc:
            raise SSHError(f"lost the connection to {host.name}: {exc}", BOOT_HINT) from None
    finally:
        loop.remove_reader(fd_in)
        if winch:
            loop.remove_signal_handler(signal.SIGWINCH)
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        if proc is not None:
            stop_process(proc)
        for fwd in opened:
            fwd.close()
    status = exit_status(proc)
    return 255 if status is None else status
