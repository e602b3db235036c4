#!/usr/bin/env python3
"""Runs inside one sandbox box's network namespace and hands sockets to the sandbox daemon.

Each box has its own network namespace (its own loopback); the daemon, whose SSH server
answers for the box, lives outside it. The daemon starts this program in the box's
namespace (`nsenter -U -n -t <box init>`) with one end of a Unix socketpair, as
`netns.py FD [PORT ...]`:

- a request `ID HOST PORT` opens a TCP connection inside the box; the answer is `ID ok`
  with the connected socket attached (SCM_RIGHTS; a socket keeps its namespace), or
  `ID err ERRNO MESSAGE`. A port nothing serves is refused at once.
- for every PORT it listens on the box's 127.0.0.1:PORT and passes each connection it
  accepts up as `accept PORT` with the socket attached, so the daemon can carry it to the
  same port outside (the instance metadata service, sandbox/imds.py).

It says `ready` once it listens, and exits when the daemon's end closes.
Standard library only, nothing from cloudsh.
"""

from __future__ import annotations

import errno
import socket
import sys
import threading

CONNECT_TIMEOUT_S = 10.0


class Link:
    def __init__(self, ctl: socket.socket) -> None:
        self.ctl = ctl
        self.lock = threading.Lock()

    def send(self, text: str, sock: socket.socket | None = None) -> None:
        with self.lock:
            try:
                if sock is None:
                    self.ctl.send(text.encode())
                else:
                    socket.send_fds(self.ctl, [text.encode()], [sock.fileno()])
            except OSError:
                pass  # the daemon went away: the main loop ends on its next read
        if sock is not None:
            sock.close()

    def connect(self, req_id: str, host: str, port: int) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            code = exc.errno or errno.ETIMEDOUT
            self.send(f"{req_id} err {code} {exc.strerror or exc}")
            return
        sock.settimeout(None)
        self.send(f"{req_id} ok", sock)

    def relay(self, listener: socket.socket, port: int) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.send(f"accept {port}", conn)


def main(argv: list[str]) -> int:
    ctl = socket.socket(fileno=int(argv[1]))
    link = Link(ctl)
    for port in (int(p) for p in argv[2:]):
        listener = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=link.relay, args=(listener, port), daemon=True).start()
    link.send("ready")
    while True:
        try:
            msg = ctl.recv(4096)
        except OSError:
            return 0
        if not msg:
            return 0
        req_id, host, port_text = msg.decode().split()
        threading.Thread(target=link.connect, args=(req_id, host, int(port_text)), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
