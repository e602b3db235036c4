"""The sandbox's instance metadata service (IMDSv2), for spot interruption notices.

On EC2 every instance reaches its own metadata at http://169.254.169.254. Sandbox boxes
share this machine's loopback, so one server serves them all, each under its own
prefix: a box's `CLOUDSH_IMDS_ENDPOINT` (set by its SSH server) is
`http://127.0.0.1:PORT/<instance-id>`, and code on the box builds the same URLs as on
EC2 from it (`$CLOUDSH_IMDS_ENDPOINT/latest/api/token`, ...).

Served per instance, as EC2 serves them:

- `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..21600` -> token
- `GET /latest/meta-data/instance-id`
- `GET /latest/meta-data/spot/instance-action` -> 404, or `{"action": "stop", "time": ...}`
  once an interruption is announced
- `POST /_sandbox/poweroff` (sandbox only): the box shut itself down (`poweroff.py`)

GETs need a valid `X-aws-ec2-metadata-token` (else 401), as with `HttpTokens=required`.

`POST /_sandbox/interrupt` with `{"instance_id": ..., "notice_s": ...}` plays an
interruption (`cloudsh sandbox interrupt`): the notice appears at once, and after
`notice_s` the daemon stops or terminates the box, as its interruption behaviour says.
Other `/_sandbox/...` paths are the daemon's knobs, registered in `controls`
(`capacity.py`'s `/_sandbox/capacity`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger("cloudsh.sandbox.imds")

MAX_TTL_S = 21600
_MAX_REQUEST = 65536

#: instance id -> (interruption behaviour "stop"/"terminate"/"hibernate", or an error line).
Check = Callable[[str], tuple[str | None, str]]
#: Stops or terminates the instance after its notice.
Enforce = Callable[[str, str], Awaitable[None]]
#: A control path's handler: (method, body) -> (HTTP status, text).
Control = Callable[[str, bytes], tuple[int, str]]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}


class Imds:
    """One HTTP server on 127.0.0.1 for every sandbox instance's metadata."""

    def __init__(self, check: Check, enforce: Enforce) -> None:
        self.check = check
        self.enforce = enforce
        self.port = 0
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (instance id, expiry)
        self.notices: dict[str, dict[str, str]] = {}  # instance id -> instance-action document
        self.controls: dict[str, Control] = {}  # "/_sandbox/NAME" -> its handler
        self.changed: Callable[[], None] | None = None  # told when a control accepted a change
        #: The box powered itself off (`poweroff.py`): what EC2 does then.
        self.poweroff: Callable[[str], Awaitable[None]] | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint_for(self, instance_id: str) -> str:
        return f"{self.endpoint}/{instance_id}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def forget(self, instance_id: str) -> None:
        """The box stopped or went away: its notice and tokens go too (a restarted box has none)."""
        self.notices.pop(instance_id, None)
        for token, (iid, _) in list(self.tokens.items()):
            if iid == instance_id:
                del self.tokens[token]

    # -- HTTP -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                if len(parts) != 3:
                    return
                method, path, _ = parts
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = min(int(headers.get("content-length", "0") or 0), _MAX_REQUEST)
                body = await reader.readexactly(length) if length else b""
                status, text, extra = await self._answer(method, path, headers, body)
                data = text.encode()
                out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: text/plain",
                       f"Content-Length: {len(data)}", *extra, "", ""]
                writer.write("\r\n".join(out).encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[str]]:
        path = path.split("?", 1)[0]
        if path == "/_sandbox/interrupt":
            return self._interrupt(method, body)
        control = self.controls.get(path)
        if control is not None:
            status, text = control(method, body)
            if method == "POST" and status == 200 and self.changed is not None:
                self.changed()
            return status, text, []
        iid, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        if not iid.startswith("i-"):
            return 404, "Not Found", []
        if rest == "/latest/api/token":
            if method != "PUT":
                return 405, "Method Not Allowed", []
            try:
                ttl = int(headers.get("x-aws-ec2-metadata-token-ttl-seconds", ""))
            except ValueError:
                return 400, "Bad Request", []
            if not 1 <= ttl <= MAX_TTL_S:
                return 400, "Bad Request", []
            token = secrets.token_urlsafe(32)
            self.tokens[token] = (iid, time.monotonic() + ttl)
            return 200, token, [f"X-aws-ec2-metadata-token-ttl-seconds: {ttl}"]
        if rest == "/_sandbox/poweroff" and self.poweroff is not None:
            if method != "POST":
                return 405, "Method Not Allowed", []
            self._spawn(self.poweroff(iid))
            return 200, "powering off", []
        if method != "GET":
            return 405, "Method Not Allowed", []
        owner, expiry = self.tokens.get(headers.get("x-aws-ec2-metadata-token", ""), ("", 0.0))
        if owner != iid or expiry < time.monotonic():
            return 401, "Unauthorized", []
        if rest == "/latest/meta-data/instance-id":
            return 200, iid, []
        if rest == "/latest/meta-data/spot/instance-action":
            notice = self.notices.get(iid)
            return (200, json.dumps(notice), []) if notice else (404, "Not Found", [])
        return 404, "Not Found", []

    def _interrupt(self, method: str, body: bytes) -> tuple[int, str, list[str]]:
        if method != "POST":
            return 405, "Method Not Allowed", []
        try:
            req = json.loads(body or b"{}")
            iid = str(req["instance_id"])
            notice_s = max(0.0, float(req.get("notice_s", 10.0)))
        except (ValueError, KeyError, TypeError):
            return 400, "expected {\"instance_id\": ..., \"notice_s\": ...}", []
        if iid in self.notices:
            return 409, f"{iid} already has an interruption notice", []
        behaviour, error = self.check(iid)
        if behaviour is None:
            return 409, error, []
        action = "terminate" if behaviour == "terminate" else "stop"
        when = datetime.now(UTC) + timedelta(seconds=notice_s)
        self.notices[iid] = {"action": action, "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        log.info("%s: spot interruption notice (%s in %g s)", iid, action, notice_s)
        self._spawn(self._later(iid, action, notice_s))
        return 200, json.dumps({"instance_id": iid, **self.notices[iid]}), []

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, iid: str, action: str, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.enforce(iid, action)
        except Exception:  # the daemon must outlive a failed stop; it is logged
            log.exception("%s: could not %s after the interruption notice", iid, action)
