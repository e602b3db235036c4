#!/usr/bin/env python3
"""Sandbox stand-in for a Jupyter server, as the idle stop reads one: its REST API and its
runtime file. No kernel runs code here; each kernel's state is given on the command line.

    python3 jupyter_server.py [--port N] [--token T] [--kernel NAME:STATE[:AGO_S]] ...

It serves, as jupyter_server does, `GET /api/kernels` (a list of kernel models: `id`,
`name`, `last_activity`, `execution_state`, `connections`) and `GET /api/sessions`, only
with the token (`Authorization: token T` or `?token=T`; else 403), and writes
`jpserver-PID.json` (`url`, `token`, `pid`, `port`) in the runtime directory
(`$JUPYTER_RUNTIME_DIR`, else `~/.local/share/jupyter/runtime`), removed when it ends.
`STATE` is `busy` or `idle`; `AGO_S` is how long ago the kernel was last active (0).

It is not on a box's PATH (an Ubuntu box has no Jupyter): copy it there to use it.
Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def kernel_models(specs: list[str]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        name, _, rest = spec.partition(":")
        state, _, ago = rest.partition(":")
        # timezone.utc, not datetime.UTC: a box's python3 may be 3.10.
        last = datetime.now(timezone.utc) - timedelta(seconds=float(ago or 0))  # noqa: UP017
        out.append({"id": str(uuid.uuid4()), "name": name or "python3", "execution_state": state or "idle",
                    "last_activity": last.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "connections": 1})
    return out


def serve(port: int, token: str, kernels: list[dict[str, Any]]) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            given = self.headers.get("Authorization", "").removeprefix("token ").strip()
            given = given or (parse_qs(url.query).get("token") or [""])[0]
            if given != token:
                self._answer(403, {"message": "Forbidden", "reason": None})
            elif url.path == "/api/kernels":
                self._answer(200, kernels)
            elif url.path == "/api/sessions":
                self._answer(200, [{"id": str(uuid.uuid4()), "path": "notebook.ipynb", "type": "notebook",
                                    "kernel": k} for k in kernels])
            else:
                self._answer(404, {"message": "Not Found", "reason": None})

        def _answer(self, code: int, doc: Any) -> None:
            data = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    port = server.server_address[1]
    runtime = os.environ.get("JUPYTER_RUNTIME_DIR") or os.path.expanduser("~/.local/share/jupyter/runtime")
    os.makedirs(runtime, exist_ok=True)
    info = os.path.join(runtime, f"jpserver-{os.getpid()}.json")
    with open(info, "w") as f:
        json.dump({"url": f"http://127.0.0.1:{port}/", "token": token, "pid": os.getpid(), "port": port,
                   "base_url": "/", "root_dir": os.getcwd()}, f)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        os.unlink(info)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="jupyter_server.py")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=secrets.token_hex(24))
    p.add_argument("--kernel", action="append", default=[], metavar="NAME:STATE[:AGO_S]")
    a = p.parse_args(argv)
    serve(a.port, a.token, kernel_models(a.kernel))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
