"""One `Backend` per (cloud, profile, region): the services a front end talks to.

Real AWS and the sandbox differ only here: the endpoint and credentials, the host
resolver (public IP:22 vs the sandbox's loopback ports) and the on-demand price source.
Everything above this module runs the same code on both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudsh.config import Settings
from cloudsh.errors import CredentialsError
from cloudsh.services.aws import AwsTarget, ClientFactory
from cloudsh.services.ec2 import EC2Service

if TYPE_CHECKING:
    from cloudsh.services.hosts import HostResolver
    from cloudsh.services.pricing import PricingService
    from cloudsh.services.ssh import SSHService

DEFAULT_REGION = "us-east-1"


def sandbox_requested(flag: bool | None, env: dict[str, str] | None = None) -> bool | None:
    """True/False when the user chose (flag or CLOUDSH_SANDBOX), None to auto-detect."""
    if flag is not None:
        return flag
    env = dict(os.environ if env is None else env)
    value = env.get("CLOUDSH_SANDBOX", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def aws_credentials_configured(profile: str | None, env: dict[str, str] | None = None) -> bool:
    """Whether the user has set up AWS credentials at all, without calling out anywhere.

    botocore's full credential chain ends with the EC2 instance metadata service,
    which costs a 1 s timeout off EC2 and sends traffic off this machine, so
    auto-detection only looks at the environment and the AWS config files.
    """
    env = dict(os.environ if env is None else env)
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


@dataclass
class Backend:
    settings: Settings
    target: AwsTarget
    clients: ClientFactory
    ec2: EC2Service
    _ssh: SSHService | None = field(default=None, repr=False)
    _hosts: HostResolver | None = field(default=None, repr=False)
    _pricing: PricingService | None = field(default=None, repr=False)
    #: Why the sandbox was chosen, when it was not asked for (shown to the user once).
    notice: str = ""

    @property
    def sandbox(self) -> bool:
        return self.target.sandbox

    @property
    def label(self) -> str:
        """`SANDBOX`, or `profile/region` for real AWS."""
        if self.target.sandbox:
            return "SANDBOX"
        return f"{self.target.profile or 'default'}/{self.target.region}"

    @property
    def hosts(self) -> HostResolver:
        if self._hosts is None:
            from cloudsh.services.hosts import AwsHostResolver, SandboxHostResolver

            self._hosts = (
                SandboxHostResolver(self.settings)
                if self.target.sandbox
                else AwsHostResolver(self.settings)
            )
        return self._hosts

    @property
    def ssh(self) -> SSHService:
        # asyncssh costs ~120 ms to import: only commands that use SSH pay for it.
        if self._ssh is None:
            from cloudsh.services.ssh import SSHService

            self._ssh = SSHService(self.settings)
        return self._ssh

    @property
    def pricing(self) -> PricingService:
        if self._pricing is None:
            from cloudsh.services.pricing import (
                AwsOnDemandSource,
                PricingService,
                SandboxOnDemandSource,
            )

            source = (
                SandboxOnDemandSource()
                if self.target.sandbox
                else AwsOnDemandSource(self.clients, self.target.region)
            )
            self._pricing = PricingService(
                self.clients, self.target.region, source, self.settings.cache_dir
            )
        return self._pricing

    async def close(self) -> None:
        if self._ssh is not None:
            await self._ssh.close()

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        sandbox: bool | None = None,
        profile: str | None = None,
        region: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Backend:
        """Pick the cloud: the sandbox if asked for or if no AWS credentials are set up."""
        env = dict(os.environ if env is None else env)
        profile = profile or env.get("AWS_PROFILE") or None
        choice = sandbox_requested(sandbox, env)
        notice = ""
        if choice is None:
            choice = not aws_credentials_configured(profile, env)
            if choice:
                notice = (
                    "no AWS credentials found: using the local sandbox cloud "
                    "(run `aws configure` to manage real EC2)"
                )
        if choice:
            target = sandbox_target(settings)
        else:
            configured = _profile_region(profile)
            region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or configured or DEFAULT_REGION
            target = AwsTarget(region=region, profile=profile, endpoint_url=env.get("AWS_ENDPOINT_URL") or None)
        clients = ClientFactory(target, cache_dir=settings.cache_dir)
        return cls(
            settings=settings,
            target=target,
            clients=clients,
            ec2=EC2Service(clients, cache_dir=settings.cache_dir),
            notice=notice,
        )


def sandbox_target(settings: Settings) -> AwsTarget:
    """The running sandbox's endpoint, starting the sandbox first if none runs."""
    from cloudsh.sandbox import state as sbx
    from cloudsh.sandbox.control import sandbox_up

    st = sandbox_up(settings)
    return AwsTarget(
        region=st.region,
        endpoint_url=st.endpoint,
        access_key_id=sbx.ACCESS_KEY_ID,
        secret_access_key=sbx.SECRET_ACCESS_KEY,
        sandbox=True,
    )


def _profile_region(profile: str | None) -> str | None:
    """The profile's configured region; a profile that does not exist is an error here,
    before any client is made (botocore would only raise it from deep inside a call)."""
    import botocore.session

    session = botocore.session.Session()
    if profile is not None:
        if profile not in session.available_profiles:
            raise CredentialsError(
                f"no AWS profile named {profile!r}",
                "list yours with `aws configure list-profiles`",
            )
        session.set_config_variable("profile", profile)
    try:
        return session.get_config_variable("region")  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - a broken config file: the default region, and boto3 says the rest
        return None
