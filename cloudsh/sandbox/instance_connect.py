"""EC2 Instance Connect in the sandbox: `SendSSHPublicKey` puts a key on a running box for
60 seconds, as the service does ("Connect using EC2 Instance Connect", EC2 user guide:
"the public key ... is available in the instance metadata for 60 seconds").

The service speaks AWS's JSON protocol (`X-Amz-Target: AWSEC2InstanceConnectService.*`),
so this layer answers it before the EC2 query layers see the request. Errors are the
service's own (API reference, SendSSHPublicKey, Errors): EC2InstanceNotFoundException,
EC2InstanceStateInvalidException ("Connecting to a stopped or terminated instance is not
supported"), InvalidArgsException. The sandbox's one account may call it; an IAM refusal
(AccessDeniedException) is played at the edge in tests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from cloudsh.sandbox.wsgi import StartResponse, WsgiApp

TARGET = "AWSEC2InstanceConnectService.SendSSHPublicKey"
KEY_LIFETIME_S = 60.0


class InstanceConnectLayer:
    """Answers SendSSHPublicKey; hands every other request on. `push(instance_id, user,
    key_line, seconds)` makes the box's SSH server accept the key for that long."""

    def __init__(self, app: WsgiApp, backend: Callable[[], Any], push: Callable[[str, str, str, float], None]) -> None:
        self.app = app
        self.backend = backend
        self.push = push

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") != TARGET:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except ValueError:
            body = {}
        status, answer = self._send(body)
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))]
        if status != "200 OK":
            headers.append(("x-amzn-ErrorType", answer["__type"]))
        data = json.dumps(answer).encode()
        start_response(status, [*headers, ("Content-Length", str(len(data)))])
        return [data]

    def _send(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        iid, user, key = body.get("InstanceId", ""), body.get("InstanceOSUser", ""), body.get("SSHPublicKey", "")
        if not iid or not user or len(key.split()) < 2:
            return _error("400 Bad Request", "InvalidArgsException", "One of the parameters is not valid.")
        inst = self.backend().get_instance_by_id(iid) if iid.startswith("i-") else None
        if inst is None:
            return _error("400 Bad Request", "EC2InstanceNotFoundException", "The specified instance was not found.")
        az = body.get("AvailabilityZone")
        if az and az != inst.placement.zone:
            return _error("400 Bad Request", "EC2InstanceNotFoundException", "The specified instance was not found.")
        if inst.state != "running":
            return _error("400 Bad Request", "EC2InstanceStateInvalidException",
                          "Unable to connect because the instance is not in a valid state.")
        self.push(iid, user, key, KEY_LIFETIME_S)
        return "200 OK", {"RequestId": str(uuid.uuid4()), "Success": True}


def _error(status: str, code: str, message: str) -> tuple[str, dict[str, Any]]:
    return status, {"__type": code, "Message": message}
