"""The sandbox's price source: published list prices and a deterministic spot market.

moto serves neither the Pricing API nor a useful `DescribeSpotPriceHistory` (it answers a
constant 0.00001), so the sandbox supplies both from here. On-demand prices are real
published us-east-1 Linux list prices, labelled with their date; other regions' are
the sandbox's own list, us-east-1's times the region's factor (`regions.PRICE_FACTORS`).
Spot prices are synthetic but plausible: each (type, AZ) pair has its own discount,
wandering hour by hour within a bounded band around its region's list price, and the
same hour always has the same price, whatever window is asked for.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from cloudsh.sandbox import regions

PRICES_DATE = "2025-05-01"
PRICES_SOURCE = (
    f"AWS us-east-1 Linux on-demand list prices, as published {PRICES_DATE} "
    "(before the June 2025 P4d/P5 price cuts)"
)
#: Where the sandbox's spot prices come from, for labels.
SPOT_SOURCE = "spot prices simulated by the sandbox"

SANDBOX_AZS = ("us-east-1a", "us-east-1b", "us-east-1c")

#: us-east-1, Linux, shared tenancy, on-demand $/h.
LIST_PRICES: dict[str, float] = {
    "t3.micro": 0.0104,
    "t3.small": 0.0208,
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "t3.2xlarge": 0.3328,
    "m5.large": 0.096,
    "m5.xlarge": 0.192,
    "m5.2xlarge": 0.384,
    "m5.4xlarge": 0.768,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
    "m6i.2xlarge": 0.384,
    "m6i.4xlarge": 0.768,
    "c5.large": 0.085,
    "c5.xlarge": 0.17,
    "c5.2xlarge": 0.34,
    "c5.4xlarge": 0.68,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6.4xlarge": 1.3232,
    "g6.8xlarge": 2.0144,
    "g6.12xlarge": 4.6016,
    "p3.2xlarge": 3.06,
    "p3.8xlarge": 12.24,
    "p3.16xlarge": 24.48,
    "p4d.24xlarge": 32.7726,
    "p5.48xlarge": 98.32,
}

_GPU_FAMILIES = ("g4dn", "g5", "g6", "p3", "p4d", "p5")
_KNOT_HOURS = (24, 6)  # two octaves of smooth noise: a daily drift and a 6-hourly wobble


def list_prices(region: str) -> dict[str, float]:
    """The sandbox's on-demand list prices in `region`, $/h."""
    factor = regions.price_factor(region)
    return {t: round(p * factor, 4) for t, p in LIST_PRICES.items()}


def prices_source(region: str) -> str:
    """Where `list_prices(region)` comes from, for labels."""
    if region == "us-east-1":
        return PRICES_SOURCE
    return (
        f"sandbox list prices for {region}: us-east-1's, as published {PRICES_DATE}, "
        f"times {regions.price_factor(region):g} (the region's m5.large price ratio)"
    )


def _on_demand(instance_type: str, az: str) -> float | None:
    """The list price behind the spot market of `az` (its region's)."""
    price = LIST_PRICES.get(instance_type)
    return None if price is None else round(price * regions.price_factor(regions.of_az(az)), 4)


def _unit(*parts: object) -> float:
    """A reproducible number in [0, 1) from its key (hash-based, so it is stable across runs)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _noise(key: str, hour: int, period: int) -> float:
    """Smooth noise in [-1, 1]: seeded values at every `period` hours, cosine-interpolated."""
    k, r = divmod(hour, period)
    a = _unit(key, period, k) * 2 - 1
    b = _unit(key, period, k + 1) * 2 - 1
    t = (1 - math.cos(math.pi * r / period)) / 2
    return a + (b - a) * t


def _discount(instance_type: str, az: str, hour: int) -> float:
    """Fraction below on-demand: 55-75 % for GPU types, 50-70 % for CPU types."""
    low, high = (0.55, 0.75) if instance_type.split(".", 1)[0] in _GPU_FAMILIES else (0.50, 0.70)
    key = f"{instance_type}@{az}"
    mid, half = (low + high) / 2, (high - low) / 2
    # Each AZ sits at its own level within the band, and the market wanders around it.
    level = (_unit(key, "level") * 2 - 1) * half * 0.5
    wander = (
        0.3 * _noise(key, hour, _KNOT_HOURS[0]) + 0.2 * _noise(key, hour, _KNOT_HOURS[1])
    ) * half
    return min(high, max(low, mid + level + wander))


def spot_price(instance_type: str, az: str, at: datetime) -> float | None:
    """The simulated spot price in force at `at` (it changes on the hour)."""
    on_demand = _on_demand(instance_type, az)
    if on_demand is None:
        return None
    hour = math.floor(_utc(at).timestamp() / 3600)
    return round(on_demand * (1 - _discount(instance_type, az, hour)), 4)


def spot_price_history(
    instance_type: str, az: str, start: datetime, end: datetime
) -> list[tuple[datetime, float]]:
    """Hourly (time, $/h) points from the one in force at `start` up to `end`, oldest first.

    Like EC2's DescribeSpotPriceHistory, the price that was current at `start` is
    included (its timestamp is the hour it took effect), so `start == end == now` gives
    the current price. Empty for types without a list price.
    """
    on_demand = _on_demand(instance_type, az)
    if on_demand is None:
        return []
    start, end = _utc(start), _utc(end)
    first = math.floor(start.timestamp() / 3600)
    last = math.floor(end.timestamp() / 3600)
    out: list[tuple[datetime, float]] = []
    for hour in range(first, last + 1):
        at = datetime.fromtimestamp(hour * 3600, UTC)
        out.append((at, round(on_demand * (1 - _discount(instance_type, az, hour)), 4)))
    return out


def _utc(value: datetime) -> datetime:
    # Naive datetimes are taken as UTC, as botocore does for StartTime/EndTime.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = [
    "LIST_PRICES",
    "PRICES_DATE",
    "PRICES_SOURCE",
    "SANDBOX_AZS",
    "SPOT_SOURCE",
    "list_prices",
    "prices_source",
    "spot_price",
    "spot_price_history",
]
