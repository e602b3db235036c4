"""boto3 sessions and clients: one shared client per (service, region).

boto3 clients are thread-safe for calls; sessions are not, so the one session is only
touched under a lock, when a client is first made. Building a client costs ~150 ms
(it loads and parses the service model), so a client per worker thread would pay that
again in every thread: `cloudsh ls` went from 0.2 s to 0.05 s of API time by sharing.
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
    """Hands out boto3 clients, one per (service, region), shared by all threads."""

    def __init__(self, target: AwsTarget, *, connect_timeout: float = 5.0, read_timeout: float = 30.0):
        self.target = target
        self._client_lock = threading.Lock()
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._config = botocore.config.Config(
            retries=_RETRIES,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=20,
            user_agent_extra="cloudsh",
        )
        self._hooks: list[tuple[str, Any]] = []

    def register(self, event: str, handler: Any) -> None:
        """Register a botocore event handler on every client made from now on (tests, tracing)."""
        with self._client_lock:
            self._hooks.append((event, handler))
            self._clients.clear()

    def session(self) -> boto3.Session:
        with self._client_lock:
            return self._session_locked()

    def _session_locked(self) -> boto3.Session:
        if self._session is None:
            t = self.target
            self._session = boto3.Session(
                profile_name=t.profile,
                region_name=t.region,
                aws_access_key_id=t.access_key_id,
                aws_secret_access_key=t.secret_access_key,
            )
        return self._session

    def client(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self.target.region)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._client_lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session_locked().client(
                    service, region_name=key[1], endpoint_url=self.target.endpoint_url, config=self._config
                )
                for event, handler in self._hooks:
                    client.meta.events.register(event, handler)
                self._clients[key] = client
        return client


ClientError = botocore.exceptions.ClientError
BotoCoreError = botocore.exceptions.BotoCoreError
