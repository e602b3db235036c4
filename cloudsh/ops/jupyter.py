"""Jupyter one key away: the address, with its token, of a Jupyter server running on a
box, as seen through a tunnel's local port; and opening it in the browser.

A forward to a box's port on which a Jupyter server listens (as `jupyter server list
--json` on the box says, one JSON object per running server, each with `port`, `token`,
`base_url`, `secure`, ...) is worth its URL with the token, mapped to the local port:
`http://localhost:LOCAL/?token=T`. The tunnel keeper (`ops.tunnels`) asks once per
(re)opening and puts the URL in its `TunnelOpened` event, so `cloudsh tunnel`, the REPL,
the app and the background tunnels all show the same. A box without Jupyter, or one
that does not answer quickly, adds nothing and never fails the tunnel.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from cloudsh.errors import CloudshError
from cloudsh.models import HostInfo

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend

#: On the box: `pip install --user` puts `jupyter` in ~/.local/bin, which a login shell
#: has on PATH and `ssh box CMD` does not; Notebook 6 only knows `jupyter notebook list`.
LIST_COMMAND = (
    'PATH="$HOME/.local/bin:$PATH"; '
    "{ jupyter server list --json || jupyter notebook list --json; } 2>/dev/null"
)
#: Seconds the box gets to answer; a tunnel does not wait longer for its Jupyter URL.
LIST_TIMEOUT_S = 10.0
#: What `tunnel --open` says when no forwarded port has a Jupyter server behind it.
NO_JUPYTER = "nothing to open: no Jupyter server listens on the forwarded ports (`jupyter server list` on the box)"


@dataclass(frozen=True)
class JupyterServer:
    """One running server, as `jupyter server list --json` describes it."""

    port: int
    token: str = ""
    base_url: str = "/"
    secure: bool = False

    def url(self, local_port: int) -> str:
        """Its address through a forward from `local_port`, with the token."""
        scheme = "https" if self.secure else "http"
        base = "/" + self.base_url.strip("/") + ("/" if self.base_url.strip("/") else "")
        query = f"?token={quote(self.token, safe='')}" if self.token else ""
        return f"{scheme}://localhost:{local_port}{base}{query}"


def parse_servers(text: str) -> list[JupyterServer]:
    """The servers in `jupyter server list --json` output (lines that are not a server's
    JSON object are skipped)."""
    found = []
    for line in text.splitlines():
        try:
            info = json.loads(line)
            found.append(JupyterServer(int(info["port"]), str(info.get("token") or ""),
                                       str(info.get("base_url") or "/"), bool(info.get("secure"))))
        except (ValueError, TypeError, KeyError):
            continue
    return found


async def servers(backend: Backend, host: HostInfo) -> list[JupyterServer]:
    """The Jupyter servers running on the box; none if it has no Jupyter or cannot say."""
    try:
        result = await backend.ssh.run(host, LIST_COMMAND, timeout=LIST_TIMEOUT_S)
    except (CloudshError, TimeoutError):
        return []
    return parse_servers(result.stdout)


async def urls(backend: Backend, host: HostInfo, forwards: Sequence[tuple[int, int]]) -> dict[int, str]:
    """local port -> the Jupyter URL through it, for the (local, remote) forwards whose
    remote port a Jupyter server on the box listens on."""
    by_port = {s.port: s for s in await servers(backend, host)}
    return {local: by_port[remote].url(local) for local, remote in forwards if remote in by_port}


def open_in_browser(url: str) -> str:
    """Open `url` in the browser (`webbrowser`: `$BROWSER` if set, else the desktop's);
    a line saying what happened. It may wait for the browser (a `$BROWSER` command runs
    to its end): call it off the event loop (`open_urls`)."""
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    return f"opened {url} in the browser" if opened else f"no browser found: open {url} yourself"


async def open_urls(urls: Sequence[str]) -> list[str]:
    """`tunnel --open`: the first Jupyter URL opened in the browser, off the event loop;
    the lines to say (`NO_JUPYTER` when there is none)."""
    import asyncio

    found = [u for u in urls if u]
    return [await asyncio.to_thread(open_in_browser, found[0])] if found else [NO_JUPYTER]
