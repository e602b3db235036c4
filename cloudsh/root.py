"""The composition root: picks real AWS or the local sandbox and builds the `Backend`.

The one module that knows both `services/` (the AWS implementations) and `sandbox/`
(the local cloud's implementations of the same interfaces). Everything above it asks
for a `Backend` through `connect`; nothing below it knows which cloud it serves.

Kept light to import: botocore (~150 ms) and the sandbox load only when a backend is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cloudsh.config import Settings
from cloudsh.errors import UsageError

if TYPE_CHECKING:
    from cloudsh.services.aws import AwsTarget
    from cloudsh.services.backend import Backend

DEFAULT_REGION = "us-east-1"

#: Said once when the sandbox is chosen because AWS is not set up.
NO_CREDENTIALS_NOTICE = (
    "no AWS credentials found: using the local sandbox cloud "
    "(run `aws configure` to manage real EC2)"
)


def connect(
    settings: Settings,
    *,
    sandbox: bool | None = None,
    profile: str | None = None,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
    region_checked: bool = False,
) -> Backend:
    """The backend for the cloud the user chose: the sandbox if asked for (flag or
    `CLOUDSH_SANDBOX`) or if no AWS credentials are set up, else real AWS.
    `region_checked`: `region` was checked before (say, when `ssh-config` wrote it down),
    so its check (~0.6 s of botocore data) is skipped.

    Raises:
        CredentialsError: the AWS profile asked for does not exist.
        UsageError: the region is unknown, or one the sandbox does not serve.
        SandboxError: the sandbox was chosen and would not start.
    """
    env = dict(os.environ if env is None else env)
    profile = profile or env.get("AWS_PROFILE") or None
    choice = sandbox_requested(sandbox, env)
    notice = ""
    if choice is None:
        choice = not aws_credentials_configured(profile, env)
        notice = NO_CREDENTIALS_NOTICE if choice and first_time(settings, "no-credentials") else ""
    if choice:
        if region is not None and not region_checked:
            sandbox_region(region)
        target = sandbox_target(settings, region)
        from cloudsh.sandbox.persist import take_notice

        lost = take_notice(settings.sandbox_path)
        return build_backend(settings, target, notice="; ".join(n for n in (notice, lost) if n))
    target = aws_target(profile, region, env, region_checked=region_checked)
    return build_backend(settings, target, notice=endpoint_notice(settings, target, env))


def first_time(settings: Settings, what: str) -> bool:
    """True the first time `what` is asked about on this machine (a marker in the state
    dir), so a notice is said once rather than before every command."""
    marker = settings.state_dir / f"said-{what}"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        with open(marker, "x"):
            return True
    except FileExistsError:
        return False
    except OSError:
        return True  # an unwritable state dir: better said again than never


def remembered_address(settings: Settings, *, sandbox: bool) -> str | None:
    """This machine's public address if known without asking anyone (as the backend's
    `address` source would say it), else None. Loads neither botocore nor asyncio."""
    if sandbox:
        from cloudsh.sandbox.state import read_state

        state = read_state(settings.sandbox_path)
        return state.public_address if state is not None else None
    from cloudsh.services.address import CheckIpAddress

    return CheckIpAddress(settings.cache_dir).remembered()


def build_backend(settings: Settings, target: AwsTarget, *, notice: str = "") -> Backend:
    """A backend on `target`, with the sandbox's parts when `target.sandbox`."""
    from cloudsh.ops.reach import recheck_after_timeout
    from cloudsh.services.address import AddressSource, CheckIpAddress
    from cloudsh.services.aws import ClientFactory
    from cloudsh.services.backend import Backend
    from cloudsh.services.ec2 import EC2Service
    from cloudsh.services.hosts import AwsHostResolver, HostResolver
    from cloudsh.services.pricing import (
        AwsOnDemandSource,
        Ec2SpotSource,
        OnDemandSource,
        SpotSource,
    )

    clients = ClientFactory(target, cache_dir=settings.cache_dir)
    hosts: HostResolver
    on_demand: OnDemandSource
    spot: SpotSource
    address: AddressSource
    if target.sandbox:
        from cloudsh.sandbox.firewall import SandboxAddress
        from cloudsh.sandbox.hosts import SandboxHostResolver
        from cloudsh.sandbox.pricing import SandboxOnDemandSource, SandboxSpotSource

        hosts = SandboxHostResolver(settings)
        on_demand = SandboxOnDemandSource(target.region)
        spot = SandboxSpotSource(clients, target.region)
        address = SandboxAddress(settings)
    else:
        hosts = AwsHostResolver(settings)
        on_demand = AwsOnDemandSource(clients, target.region)
        spot = Ec2SpotSource(clients, target.region)
        address = CheckIpAddress(settings.cache_dir)
    backend = Backend(
        settings=settings,
        target=target,
        clients=clients,
        ec2=EC2Service(clients, cache_dir=settings.cache_dir, settle_s=settings.consistency_wait_s),
        hosts=hosts,
        on_demand=on_demand,
        spot=spot,
        address=address,
        notice=notice,
    )
    # SSH follows the laptop: a connection that times out first checks the firewall.
    backend.on_ssh_timeout = lambda host: recheck_after_timeout(backend, host)
    return backend


def sandbox_requested(flag: bool | None, env: Mapping[str, str] | None = None) -> bool | None:
    """True/False when the user chose (flag or CLOUDSH_SANDBOX), None to auto-detect."""
    if flag is not None:
        return flag
    env = os.environ if env is None else env
    value = env.get("CLOUDSH_SANDBOX", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def aws_credentials_configured(profile: str | None, env: Mapping[str, str] | None = None) -> bool:
    """Whether the user has set up AWS credentials at all, without calling out anywhere.

    botocore's full credential chain ends with the EC2 instance metadata service,
    which costs a 1 s timeout off EC2 and sends traffic off this machine, so
    auto-detection only looks at the environment and the AWS config files.
    """
    env = os.environ if env is None else env
    if profile or env.get("AWS_PROFILE"):
        return True
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    home = Path(env.get("HOME") or Path.home())
    files = [
        Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"),
        Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"),
    ]
    return any(f.is_file() for f in files)


def aws_target(
    profile: str | None, region: str | None, env: Mapping[str, str], *, region_checked: bool = False
) -> AwsTarget:
    """Real AWS (or whatever `AWS_ENDPOINT_URL` points at) for `profile`, in the region
    asked for (checked unless `region_checked`), else the environment's, else the
    profile's, else us-east-1."""
    from cloudsh.services.aws import AwsTarget, profile_region

    configured = profile_region(profile)
    if not (region and region_checked):
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or configured or DEFAULT_REGION
        check_region(region)
    return AwsTarget(region=region, profile=profile, endpoint_url=env.get("AWS_ENDPOINT_URL") or None)


def sandbox_target(settings: Settings, region: str | None = None) -> AwsTarget:
    """The running sandbox's endpoint for `region` (default the sandbox's own), starting
    the sandbox first if none runs."""
    from cloudsh.sandbox import state as sbx
    from cloudsh.sandbox.control import sandbox_up
    from cloudsh.services.aws import AwsTarget

    st = sandbox_up(settings)
    return AwsTarget(
        region=region or st.region,
        endpoint_url=st.endpoint,
        access_key_id=sbx.ACCESS_KEY_ID,
        secret_access_key=sbx.SECRET_ACCESS_KEY,
        sandbox=True,
    )


#: What an unknown region's error suggests instead.
REGION_HINT = "e.g. us-east-1, eu-west-1 (see `aws ec2 describe-regions`)"


def check_region(region: str) -> None:
    """Refuse a region name botocore's partition data does not know (read locally, no
    network): EC2 would not answer there, and botocore only fails at the first call,
    with an endpoint error that does not name the region.

    Raises:
        UsageError: no partition has a region by that name.
    """
    from cloudsh.services.aws import known_regions

    if region not in known_regions():
        raise UsageError(f"unknown region {region!r}", REGION_HINT)


def sandbox_regions() -> frozenset[str]:
    """The regions the sandbox serves."""
    from cloudsh.sandbox import regions

    return regions.SERVED


def sandbox_region(region: str) -> None:
    """Refuse a `--region` the sandbox does not serve, before it is started: answering
    for it would show that region's boxes as none.

    Raises:
        UsageError: the region is unknown, or not one the sandbox plays.
    """
    from cloudsh.sandbox import regions

    check_region(region)
    if region not in regions.SERVED:
        raise UsageError(
            f"the sandbox does not serve {region}",
            f"use --region with one it serves ({', '.join(sorted(regions.SERVED))}), or --aws for real EC2 in {region}",
        )


def endpoint_notice(settings: Settings, target: AwsTarget, env: Mapping[str, str]) -> str:
    """What to say when `AWS_ENDPOINT_URL` sends AWS requests elsewhere: a leftover one
    makes real AWS look empty. Nothing when it is the sandbox's own endpoint together with
    `CLOUDSH_SANDBOX` (as `cloudsh sandbox env` sets them): the AWS path on the sandbox,
    chosen deliberately."""
    url = target.endpoint_url
    if not url:
        return ""
    if sandbox_requested(None, env):
        from cloudsh.sandbox.state import read_state

        state = read_state(settings.sandbox_path)
        if state is not None and state.endpoint.rstrip("/") == url.rstrip("/"):
            return ""
    return f"AWS_ENDPOINT_URL is set: --aws talks to {url}; unset it to reach AWS"


def unlock_mfa_profile(profile: str, env: Mapping[str, str] | None = None) -> None:
    """Ask for `profile`'s MFA code now if it assumes a role with one (see `services.aws.unlock`)."""
    if needs_mfa(profile, env):
        from cloudsh.services.aws import unlock

        unlock(profile)


def needs_mfa(profile: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether `profile` assumes a role with an MFA code (`mfa_serial` in its section).

    Read with the standard library, as botocore lays the files out (`[default]` or
    `[profile P]` in the config file, `[P]` in the credentials file): this runs before
    the app starts, and importing botocore here would put ~150 ms in front of every
    start with a profile.
    """
    import configparser

    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home())
    places = (
        (Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"),
         ("default", "profile default") if profile == "default" else (f"profile {profile}",)),
        (Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"), (profile,)),
    )
    for path, sections in places:
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue  # a broken file: the first call says so
        if any(parser.has_option(s, "mfa_serial") for s in sections):
            return True
    return False
