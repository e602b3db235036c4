"""A WSGI layer that plays EC2's eventual consistency: a resource just created is unknown,
for a moment, to calls that name it.

"Eventual consistency in the Amazon EC2 API"
(https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html): a create
call's answer does not mean every later call sees the resource; describe and modify
calls that name it may fail with `InvalidInstanceID.NotFound` (and the like) for a
while, and clients are told to retry with exponential backoff. moto knows a resource
the instant it makes it, so for `window_s` seconds after a create this layer answers
any call that names the new resource (by id, or a key pair by name) with the error EC2
sends: HTTP 400 and the usual `<Response><Errors>` body. The create call itself, and
listings that name nothing, are answered as moto answers them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from cloudsh.sandbox import wsgi
from cloudsh.sandbox.wsgi import StartResponse, WsgiApp

#: What each create call makes: the element of its answer that holds the new name.
_CREATES = {
    "RunInstances": "instanceId",
    "CreateSecurityGroup": "groupId",
    "ImportKeyPair": "keyName",
    "CreateKeyPair": "keyName",
    "CreateVolume": "volumeId",
    "CreateSnapshot": "snapshotId",
    "CreateImage": "imageId",
    "CopyImage": "imageId",
    "RegisterImage": "imageId",
}

#: The error EC2 answers for a name it does not know (yet), by the element above.
_NOT_FOUND = {
    "instanceId": ("InvalidInstanceID.NotFound", "The instance ID '{}' does not exist"),
    "groupId": ("InvalidGroup.NotFound", "The security group '{}' does not exist"),
    "keyName": ("InvalidKeyPair.NotFound", "The key pair '{}' does not exist"),
    "volumeId": ("InvalidVolume.NotFound", "The volume '{}' does not exist."),
    "snapshotId": ("InvalidSnapshot.NotFound", "The snapshot '{}' does not exist."),
    "imageId": ("InvalidAMIID.NotFound", "The image id '[{}]' does not exist"),
}

_KEY_USERS = frozenset({"DescribeKeyPairs", "RunInstances"})


class ConsistencyLayer:
    """In front of the other layers: remembers what each create made, and when."""

    def __init__(self, app: WsgiApp, window_s: float) -> None:
        self.app = app
        self.window_s = window_s
        self._lock = threading.Lock()
        self._born: dict[str, tuple[float, str]] = {}  # name -> (created at, element)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.window_s <= 0:
            return self.app(environ, start_response)
        params = wsgi.params(environ)
        action = params.get("Action", "")
        unseen = self._unseen(action, params)
        if unseen is not None:
            code, message = _NOT_FOUND[unseen[1]]
            return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(code, message.format(unseen[0])))
        element = _CREATES.get(action)
        if element is None:
            return self.app(environ, start_response)
        status, headers, body = wsgi.call(self.app, environ)
        if status.startswith("200"):
            names = re.findall(rf"<{element}>([^<]+)</{element}>".encode(), body)
            now = time.monotonic()
            with self._lock:
                for name in names:
                    # A repeated ClientToken answers with boxes made earlier: their clock runs on.
                    self._born.setdefault(name.decode(), (now, element))
        start_response(status, headers)
        return [body]

    def _unseen(self, action: str, params: dict[str, str]) -> tuple[str, str] | None:
        """The first name in the request still inside its window, with its element."""
        now = time.monotonic()
        with self._lock:
            for name in [n for n, (at, _) in self._born.items() if now - at >= self.window_s]:
                del self._born[name]
            if not self._born:
                return None
            for key, value in params.items():
                # Filters match nothing rather than fail (EC2 answers an empty set).
                if key.startswith("Filter.") or value not in self._born:
                    continue
                element = self._born[value][1]
                if element == "keyName" and not (action in _KEY_USERS and key.partition(".")[0] == "KeyName"):
                    # Only these name a key pair; DeleteKeyPair succeeds on EC2 whether or not
                    # the key exists, and the same text in another parameter is not a key.
                    continue
                return value, element
        return None
