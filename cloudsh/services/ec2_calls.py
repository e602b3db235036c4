"""How cloudsh calls EC2: one call or a paginated listing off the event loop, and
botocore's errors translated into `CloudshError`s that say what to do.

`EC2Calls` is the base of the EC2 services (`ec2_storage.EC2Storage`, `ec2.EC2Service`);
`translate` / `translate_botocore` serve every other AWS call too (pricing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from cloudsh.errors import (
    AWSError,
    CapacityError,
    CloudshError,
    CredentialsError,
    InvalidState,
    NotFound,
)
from cloudsh.services.aws import AwsTarget, BotoCoreError, ClientError, ClientFactory


class EC2Calls:
    """EC2 API calls for one account and region, each in a worker thread (boto3 blocks)."""

    def __init__(self, clients: ClientFactory) -> None:
        self.clients = clients
        self.region = clients.target.region

    def _call_sync(self, op: str, **kwargs: Any) -> Any:
        client = self.clients.client("ec2")
        try:
            return getattr(client, op)(**kwargs)
        except ClientError as exc:
            raise translate(exc, self.clients.target.profile) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One EC2 API call, off the event loop."""
        return await asyncio.to_thread(self._call_sync, op, **kwargs)

    def _paginate_sync(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        client = self.clients.client("ec2")
        out: list[Any] = []
        try:
            for page in client.get_paginator(op).paginate(**kwargs):
                out.extend(page.get(key, ()))
        except ClientError as exc:
            raise translate(exc, self.clients.target.profile) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None
        return out

    async def paginate(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        return await asyncio.to_thread(self._paginate_sync, op, key, **kwargs)


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
