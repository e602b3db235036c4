"""How cloudsh calls EC2: one call or a paginated listing off the event loop, and
botocore's errors translated into `CloudshError`s that say what to do.

`EC2Calls` is the base of the EC2 services (`ec2_storage.EC2Storage`, `ec2.EC2Service`);
`translate` / `translate_botocore` serve every other AWS call too (pricing).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from cloudsh.errors import (
    AWSError,
    CapacityError,
    CloudshError,
    CredentialsError,
    InvalidState,
    NotFound,
)
from cloudsh.services.aws import AwsTarget, BotoCoreError, ClientError, ClientFactory

T = TypeVar("T")

#: What EC2 answers for a resource it does not know, which right after a create means
#: "not yet": "Eventual consistency in the Amazon EC2 API"
#: (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html).
NOT_YET_CODES = frozenset({
    "InvalidInstanceID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidKeyPair.NotFound",
    "InvalidVolume.NotFound",
    "InvalidSnapshot.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidSpotInstanceRequestID.NotFound",
})
#: Retries after such an answer start here and double (the docs ask for exponential backoff).
FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0


class EC2Calls:
    """EC2 API calls for one account and region, each in a worker thread (boto3 blocks).

    Resources this service creates are noted (`created`), and so are those a listing
    shows were made moments ago (`seen`: another process, e.g. a `launch --no-wait`
    just before, made them). For `settle_s` seconds after a resource was made, a call
    naming it that EC2 answers with its NotFound error is retried with backoff, since
    EC2 may not know it everywhere yet. A NotFound for any other name, or after
    `settle_s`, is final.
    """

    def __init__(self, clients: ClientFactory, *, settle_s: float = 60.0, region: str | None = None) -> None:
        self.clients = clients
        #: The factory's region unless given (one factory serves every region of an account).
        self.region = region or clients.target.region
        self.settle_s = settle_s
        self._born: dict[str, float] = {}  # id (or key-pair name) -> when it was created
        self._born_lock = threading.Lock()  # calls run in several worker threads

    def created(self, *names: str) -> None:
        """Note resources just created here, so calls naming them ride out EC2's delay."""
        now = time.monotonic()
        with self._born_lock:
            self._born.update(dict.fromkeys(names, now))

    def seen(self, name: str, made: datetime | None) -> None:
        """Note a listed resource made at `made`, if that was less than `settle_s` ago."""
        if made is None:
            return
        age = max(0.0, (datetime.now(UTC) - made).total_seconds())
        if age < self.settle_s:
            with self._born_lock:
                self._born.setdefault(name, time.monotonic() - age)

    def _settle_deadline(self, kwargs: dict[str, Any]) -> float | None:
        """Until when a NotFound for this call may still mean "not yet", or None."""
        now = time.monotonic()
        with self._born_lock:
            self._born = {n: at for n, at in self._born.items() if now - at < self.settle_s}
            born = [self._born[n] for n in _strings(kwargs) if n in self._born]
        return min(born) + self.settle_s if born else None

    def _settled(self, attempt: Callable[[], T], kwargs: dict[str, Any]) -> T:
        """`attempt()`, retried while EC2 does not yet know a resource it names."""
        delay = FIRST_RETRY_S
        while True:
            try:
                return attempt()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in NOT_YET_CODES:
                    raise
                deadline = self._settle_deadline(kwargs)
                left = deadline - time.monotonic() if deadline is not None else 0.0
                if left <= 0:
                    raise
            time.sleep(min(delay, left))  # a worker thread's sleep: the event loop runs on
            delay = min(delay * 2, MAX_RETRY_S)

    def _translated(self, attempt: Callable[[], T], kwargs: dict[str, Any]) -> T:
        try:
            return self._settled(attempt, kwargs)
        except ClientError as exc:
            raise translate(exc, self.clients.target.profile) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None

    def _call_sync(self, op: str, **kwargs: Any) -> Any:
        # The client is made inside the translated call: making the first one resolves
        # the credentials (a credential_process runs then), which can fail too.
        return self._translated(lambda: getattr(self.clients.client("ec2", self.region), op)(**kwargs), kwargs)

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One EC2 API call, off the event loop."""
        return await asyncio.to_thread(self._call_sync, op, **kwargs)

    def _paginate_sync(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        def pages() -> list[Any]:
            out: list[Any] = []
            for page in self.clients.client("ec2", self.region).get_paginator(op).paginate(**kwargs):
                out.extend(page.get(key, ()))
            return out

        return self._translated(pages, kwargs)

    async def paginate(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        return await asyncio.to_thread(self._paginate_sync, op, key, **kwargs)


def _strings(value: Any) -> Iterable[str]:
    """Every string in a call's arguments (ids sit in lists and nested dicts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def tags_of(raw: Iterable[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw or ()}


_CREDENTIAL_CODES = {
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "SignatureDoesNotMatch",
}


def credentials_hint(profile: str | None) -> str:
    who = f" --profile {profile}" if profile else ""
    return (
        f"refresh them with `aws sso login{who}` or `aws configure{who}` "
        "(or run on the local sandbox with `cloudsh --sandbox`)"
    )


def translate(exc: ClientError, profile: str | None = None) -> CloudshError:
    """A botocore ClientError -> the CloudshError a user should see."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = str(err.get("Message", "")).rstrip(".") or code
    op = exc.operation_name
    if code in _CREDENTIAL_CODES:
        which = f"profile {profile!r}" if profile else "the default AWS credentials"
        return CredentialsError(
            f"AWS rejected {which} ({code}: {message})", credentials_hint(profile)
        )
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        return AWSError(f"not allowed to call {op}: {message}", "ask for that IAM permission", code)
    if code.startswith("InvalidInstanceID"):
        return NotFound(message, "list instances with `cloudsh ls --all`")
    if code == "IncorrectInstanceState":
        return InvalidState(message, "check its state with `cloudsh ls`")
    if code in ("InsufficientInstanceCapacity", "InsufficientCapacity", "SpotMaxPriceTooLow"):
        return CapacityError(
            f"AWS has no capacity for this right now ({message})",
            "try another type or availability zone, or on-demand instead of spot",
            code,
        )
    if code in ("VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"):
        return AWSError(
            f"over your account's quota: {message}",
            "request a higher vCPU quota in the Service Quotas console",
            code,
        )
    if code == "InvalidBlockDeviceMapping":  # e.g. a root below the image's snapshot
        return AWSError(f"{op} refused: {message}", "give the root disk at least the image's size (--disk)", code)
    if code in ("Unsupported", "InvalidParameterValue", "InvalidParameterCombination"):
        return AWSError(f"{op} refused: {message}", "", code)
    return AWSError(f"{op} failed: {code}: {message}", "", code)


def translate_botocore(exc: BotoCoreError, target: AwsTarget) -> CloudshError:
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
        which = f"profile {target.profile!r}" if target.profile else "any AWS credentials"
        return CredentialsError(f"could not find {which}: {exc}", credentials_hint(target.profile))
    if name == "CredentialRetrievalError" and getattr(exc, "kwargs", {}).get("provider") == "custom-process":
        # botocore's ProcessProvider passes on the process's stderr (empty for e.g. `false`).
        said = str(exc.kwargs.get("error_msg") or "").strip().replace("\n", " ") or "it exited with an error"
        return CredentialsError(
            f"the credential_process of profile {target.profile or 'default'!r} failed: {said}",
            f"run it by hand to see why (it is in your AWS config file), or {credentials_hint(target.profile)}",
        )
    if name in ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError"):
        return CredentialsError(f"the SSO session has expired ({exc})", credentials_hint(target.profile))
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
        if target.sandbox:
            return CloudshError(
                f"cannot reach the sandbox cloud at {target.endpoint_url}",
                "start it with `cloudsh sandbox up`",
            )
        return CloudshError(f"cannot reach AWS: {exc}", "check your network connection")
    return CloudshError(f"AWS request failed: {exc}", "")
