#!/usr/bin/env python3
"""Sandbox stand-in for a Jupyter server and its `jupyter server list`, as the idle stop
and `cloudsh tunnel` read them: its REST API, its runtime file and the list command. No
kernel runs code here; each kernel's state is given on the command line.

    python3 jupyter_server.py [server|lab] [--port N] [--token T] [--kernel NAME:STATE[:AGO_S]] ...
    python3 jupyter_server.py server list [--json]

It serves, as jupyter_server does, `GET /api/kernels` (a list of kernel models: `id`,
`name`, `last_activity`, `execution_state`, `connections`), `GET /api/sessions` and the
page at `/`, `/lab` and `/tree`, only with the token (`Authorization: token T` or
`?token=T`; else 403, and a page redirects to `/login`), and writes `jpserver-PID.json`
in the runtime directory (`$JUPYTER_RUNTIME_DIR`, else `~/.local/share/jupyter/runtime`),
removed when it ends, with jupyter_server's `ServerApp.server_info()` fields: `url`,
`hostname`, `port`, `sock`, `secure`, `base_url`, `token`, `root_dir`, `password`, `pid`,
`version`. `server list --json` prints, as jupyter_server's `JupyterServerListApp` does,
one such JSON object per line for each runtime file whose process is alive (and removes
the others); without `--json`, `URL?token=T :: ROOT_DIR` lines.
`STATE` is `busy` or `idle`; `AGO_S` is how long ago the kernel was last active (0).

It is not on a box's PATH (an Ubuntu box has no Jupyter): copy it there to use it, e.g.
as `~/.local/bin/jupyter`, where `pip install --user jupyterlab` puts the real one.
Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import argparse
import glob
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

#: The jupyter_server release whose shapes this copies.
VERSION = "2.14.2"
#: Pages (not API calls): without the token they send the browser to log in.
PAGES = ("/", "/lab", "/tree")


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
            if given != token and url.path in PAGES:
                self.send_response(302)
                self.send_header("Location", f"/login?next={url.path}")
                self.end_headers()
            elif given != token:
                self._answer(403, {"message": "Forbidden", "reason": None})
            elif url.path in PAGES:
                self._answer(200, "<!DOCTYPE html><title>JupyterLab</title>", "text/html")
            elif url.path == "/api/kernels":
                self._answer(200, kernels)
            elif url.path == "/api/sessions":
                self._answer(200, [{"id": str(uuid.uuid4()), "path": "notebook.ipynb", "type": "notebook",
                                    "kernel": k} for k in kernels])
            else:
                self._answer(404, {"message": "Not Found", "reason": None})

        def _answer(self, code: int, doc: Any, kind: str = "application/json") -> None:
            data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    port = server.server_address[1]
    os.makedirs(runtime_dir(), exist_ok=True)
    info = os.path.join(runtime_dir(), f"jpserver-{os.getpid()}.json")
    with open(info, "w") as f:
        json.dump({"url": f"http://localhost:{port}/", "hostname": "localhost", "port": port, "sock": "",
                   "secure": False, "base_url": "/", "token": token, "root_dir": os.getcwd(),
                   "password": False, "pid": os.getpid(), "version": VERSION}, f, indent=2, sort_keys=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        os.unlink(info)


def runtime_dir() -> str:
    return os.environ.get("JUPYTER_RUNTIME_DIR") or os.path.expanduser("~/.local/share/jupyter/runtime")


def list_servers(as_json: bool) -> None:
    """`jupyter server list [--json]`: the servers whose runtime file names a live process."""
    if not as_json:
        print("Currently running servers:")
    for path in sorted(glob.glob(os.path.join(runtime_dir(), "jpserver-*.json"))):
        with open(path) as f:
            info = json.load(f)
        try:
            os.kill(info["pid"], 0)
        except OSError:
            os.unlink(path)  # as jupyter_server's list_running_servers does with a dead server's file
            continue
        print(json.dumps(info) if as_json else f"{info['url']}?token={info['token']} :: {info['root_dir']}")


def main(argv: list[str]) -> int:
    if argv[:2] == ["server", "list"]:
        list_servers("--json" in argv[2:])
        return 0
    if argv[:1] in (["server"], ["lab"]):
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="jupyter_server.py")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=secrets.token_hex(24))
    p.add_argument("--kernel", action="append", default=[], metavar="NAME:STATE[:AGO_S]")
    a = p.parse_args(argv)
    serve(a.port, a.token, kernel_models(a.kernel))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
