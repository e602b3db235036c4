"""boto3 sessions and clients: one client per (thread, service, region).

boto3 clients are thread-safe for calls but cheap to keep per thread, and sessions are
not thread-safe at all, so each worker thread builds its own session and client once.
The sandbox and real AWS differ here only by `endpoint_url` and credentials.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

#: botocore's "standard" retry mode retries throttling and 5xx with backoff.
_RETRIES: dict[str, Any] = {"mode": "standard", "max_attempts": 5}


@dataclass(frozen=True)
class AwsTarget:
    """Which cloud to talk to: real AWS (profile/region) or an endpoint such as the sandbox."""

    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    sandbox: bool = False


class ClientFactory:
    """Hands out boto3 clients, one per thread and (service, region)."""

    def __init__(self, target: AwsTarget, *, connect_timeout: float = 5.0, read_timeout: float = 30.0):
        self.target = target
        self._local = threading.local()
        self._config = botocore.config.Config(
            retries=_RETRIES,  # type: ignore[arg-type]
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=20,
            user_agent_extra="cloudsh",
        )
        self._hooks: list[tuple[str, Any]] = []

    def register(self, event: str, handler: Any) -> None:
        """Register a botocore event handler on every client made from now on (tests, tracing)."""
        self._hooks.append((event, handler))
        self._local = threading.local()

    def session(self) -> boto3.Session:
        session: boto3.Session | None = getattr(self._local, "session", None)
        if session is None:
            t = self.target
            session = boto3.Session(
                profile_name=t.profile,
                region_name=t.region,
                aws_access_key_id=t.access_key_id,
                aws_secret_access_key=t.secret_access_key,
            )
            self._local.session = session
            self._local.clients = {}
        return session

    def client(self, service: str, region: str | None = None) -> Any:
        session = self.session()
        key = (service, region or self.target.region)
        clients: dict[tuple[str, str], Any] = self._local.clients
        client = clients.get(key)
        if client is None:
            endpoint = self.target.endpoint_url
            client = session.client(
                service, region_name=key[1], endpoint_url=endpoint, config=self._config
            )
            for event, handler in self._hooks:
                client.meta.events.register(event, handler)
            clients[key] = client
        return client


ClientError = botocore.exceptions.ClientError
BotoCoreError = botocore.exceptions.BotoCoreError
