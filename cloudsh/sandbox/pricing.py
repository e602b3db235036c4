"""The sandbox's price sources, behind the services' `OnDemandSource` / `SpotSource`.

On-demand prices are the sandbox's dated list (`prices.py`), since moto serves no
Pricing API. Spot prices are asked of the sandbox's EC2 endpoint like on AWS (the
daemon serves a spot market made from that list); only the label says they are
simulated.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudsh.sandbox.prices import SPOT_SOURCE, list_prices, prices_source
from cloudsh.services.aws import ClientFactory
from cloudsh.services.pricing import Ec2SpotSource


class SandboxOnDemandSource:
    """The sandbox's list prices in one region (see `cloudsh.sandbox.prices`)."""

    unpriced = "not in the sandbox's list of published prices"

    def __init__(self, region: str = "us-east-1") -> None:
        self.label = prices_source(region)
        self._prices = list_prices(region)

    def fetch(self, types: Sequence[str]) -> dict[str, float]:
        return {t: self._prices[t] for t in types if t in self._prices}


class SandboxSpotSource(Ec2SpotSource):
    """The spot market the sandbox's EC2 endpoint serves, labelled as simulated."""

    def __init__(self, clients: ClientFactory, region: str) -> None:
        super().__init__(clients, region, label=SPOT_SOURCE)
