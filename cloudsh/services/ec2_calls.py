"""How cloudsh calls EC2: one call or a paginated listing off the event loop, and
botocore's errors translated into `CloudshError`s that say what to do.

`EC2Calls` is the base of the EC2 services (`ec2_storage.EC2Storage`, `ec2.EC2Service`);
`translate` / `translate_botocore` serve every other AWS call too (pricing).
"""

from __future__ import annotations

import asyncio
import random
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
#: Answers after which a create that takes no idempotency token is made again (with backoff):
#: throttling and server errors ("Error codes for the Amazon EC2 API", EC2 API reference).
RETRY_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException",
    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure",
})
#: The request went out but its answer never came: the create may have been made. Look it up first.
LOST_ANSWER = ("ConnectionClosedError", "ReadTimeoutError")
#: No connection was made: the request never went out. Make it again.
UNSENT = ("EndpointConnectionError", "ConnectTimeoutError")
CREATE_ATTEMPTS = 5
#: How long a create whose answer was lost is looked for before it is made again: long
#: enough for EC2's eventual consistency to show it to a describe call.
LOOK_UP_S = 5.0


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
            raise translate(exc, self.clients.target.profile, self.region) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None

    def _call_sync(self, op: str, **kwargs: Any) -> Any:
        # The client is made inside the translated call: making the first one resolves
        # the credentials (a credential_process runs then), which can fail too.
        return self._translated(lambda: getattr(self.clients.client("ec2", self.region), op)(**kwargs), kwargs)

    async def call(self, op: str, **kwargs: Any) -> Any:
        """One EC2 API call, off the event loop."""
        return await asyncio.to_thread(self._call_sync, op, **kwargs)

    def _create_sync(self, op: str, look_up: Callable[[], Any | None], kwargs: dict[str, Any]) -> Any:
        """A create EC2 offers no idempotency token for, made so that one resource results:
        botocore would repeat it after a lost answer (a duplicate, or an error for a name
        now taken), so here it is made once per try, and after a lost answer `look_up()`
        (the resource found by its name or tag, as the create would have answered, or None)
        is asked until EC2 shows it or `LOOK_UP_S` passed, before making it again."""
        client = self.clients.client("ec2", once=True)

        def attempt() -> Any:
            delay = FIRST_RETRY_S
            for tries in range(1, CREATE_ATTEMPTS + 1):
                try:
                    return getattr(client, op)(**kwargs)
                except ClientError as exc:
                    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                    if tries == CREATE_ATTEMPTS or not (_code(exc) in RETRY_CODES or status >= 500):
                        raise
                except BotoCoreError as exc:
                    if tries == CREATE_ATTEMPTS or type(exc).__name__ not in LOST_ANSWER + UNSENT:
                        raise
                    found = self._look_up(look_up) if type(exc).__name__ in LOST_ANSWER else None
                    if found is not None:
                        return found
                time.sleep(delay * (1 + random.random()))  # jitter: many clients back off apart
                delay = min(delay * 2, MAX_RETRY_S)
            raise AssertionError("unreachable")

        return self._translated(attempt, kwargs)

    @staticmethod
    def _look_up(look_up: Callable[[], Any | None]) -> Any | None:
        deadline = time.monotonic() + LOOK_UP_S
        delay = FIRST_RETRY_S
        while True:
            found = look_up()
            if found is not None or time.monotonic() + delay > deadline:
                return found
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

    def finder(self, op: str, key: str, **kwargs: Any) -> Callable[[], Any | None]:
        """A look-up for `create`: the first item under `key` that `op(**kwargs)` lists, or None."""

        def look_up() -> Any | None:
            found = getattr(self.clients.client("ec2"), op)(**kwargs).get(key)
            return found[0] if found else None

        return look_up

    async def create(self, op: str, look_up: Callable[[], Any | None], **kwargs: Any) -> Any:
        """A create without an idempotency token, off the event loop (see `_create_sync`)."""
        return await asyncio.to_thread(self._create_sync, op, look_up, kwargs)

    def _paginate_sync(self, op: str, key: str, **kwargs: Any) -> list[Any]:
        """`op`'s `key` items from every page. EC2's listings all page by `NextToken`
        (botocore's paginator model for EC2), so they are asked for directly: botocore's
        paginator builds a new class with its docstring for each listing, ~1 ms a call,
        most of the client's side of an empty listing."""

        def pages() -> list[Any]:
            call = getattr(self.clients.client("ec2", self.region), op)
            out: list[Any] = []
            args = dict(kwargs)
            while True:
                page = call(**args)
                out.extend(page.get(key, ()))
                token = page.get("NextToken")
                if not token or token == args.get("NextToken"):  # the last page (or a stuck token)
                    return out
                args["NextToken"] = token

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


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


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


#: Regions an account must enable before use: those introduced after 20 March 2019
#: ("Enable or disable AWS Regions in your account", AWS Account Management reference guide).
#: EC2 answers AuthFailure there until the region is enabled; OptInRequired anywhere means
#: the same ("Error codes for the Amazon EC2 API").
OPT_IN_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-west-1", "eu-central-2",
    "eu-south-1", "eu-south-2", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
})


def translate(exc: ClientError, profile: str | None = None, region: str | None = None) -> CloudshError:
    """A botocore ClientError -> the CloudshError a user should see."""
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    message = str(err.get("Message", "")).rstrip(".") or code
    op = exc.operation_name
    if region and (code == "OptInRequired" or (code == "AuthFailure" and region in OPT_IN_REGIONS)):
        return CredentialsError(
            f"region {region} is not enabled for this AWS account ({code}: {message})",
            f"enable it with `aws account enable-region --region-name {region}` (or in the console: "
            "Account, AWS Regions; it takes minutes), or pick another --region",
        )
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
    if code == "IncorrectSpotRequestState":  # e.g. StartInstances of an interrupted spot box
        return InvalidState(message, "wait for EC2 to restart it, or `cloudsh relaunch` it from its disk")
    if code == "UnsupportedOperation":  # e.g. changing a spot box's type
        return AWSError(f"{op} refused: {message}", "", code)
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
    if code == "VPCIdNotSpecified":  # an account without a default VPC
        return AWSError(
            f"{op} needs a VPC: this account has no default VPC in the region",
            "launch with --subnet SUBNET (`aws ec2 describe-subnets` lists them)",
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
