"""One `Backend` per (cloud, profile, region): the services a front end talks to.

Real AWS and the sandbox differ only in the parts a `Backend` is built with: the
endpoint and credentials (`target`), the host resolver (public IP:22 vs the sandbox's
loopback ports) and the on-demand and spot price sources. `cloudsh.root` picks them;
everything here and above runs the same code on both.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloudsh.config import Settings
from cloudsh.services.aws import AwsTarget, ClientFactory
from cloudsh.services.ec2 import EC2Service

if TYPE_CHECKING:
    from cloudsh.models import HostInfo
    from cloudsh.services.address import AddressSource
    from cloudsh.services.hosts import HostResolver
    from cloudsh.services.pricing import OnDemandSource, PricingService, SpotSource
    from cloudsh.services.ssh import SSHService


@dataclass
class Backend:
    settings: Settings
    target: AwsTarget
    clients: ClientFactory
    ec2: EC2Service
    hosts: HostResolver
    on_demand: OnDemandSource
    spot: SpotSource
    #: This machine's public address (checkip on AWS, the simulated one in the sandbox).
    address: AddressSource
    #: Why the sandbox was chosen, when it was not asked for (shown to the user once).
    notice: str = ""
    #: Where one-line notes from deep inside a workflow go (a front end points it at its
    #: own output); by default stderr.
    tell: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))
    #: Called when an SSH connection times out; True if it fixed why (then it is retried).
    on_ssh_timeout: Callable[[HostInfo], Awaitable[bool]] | None = None
    _ssh: SSHService | None = field(default=None, repr=False)
    _pricing: PricingService | None = field(default=None, repr=False)

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
    def ssh(self) -> SSHService:
        # asyncssh costs ~120 ms to import: only commands that use SSH pay for it.
        if self._ssh is None:
            from cloudsh.services.ssh import SSHService

            self._ssh = SSHService(self.settings, on_timeout=self.on_ssh_timeout)
        return self._ssh

    @property
    def pricing(self) -> PricingService:
        if self._pricing is None:
            from cloudsh.services.pricing import PricingService

            self._pricing = PricingService(
                self.clients,
                self.target.region,
                self.on_demand,
                self.settings.cache_dir,
                spot=self.spot,
            )
        return self._pricing

    async def close(self) -> None:
        if self._ssh is not None:
            await self._ssh.close()
        self.clients.close()
