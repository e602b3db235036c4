"""Prices: on-demand from a list-price source, spot from a spot price history.

The one place prices are computed. On-demand prices come from an `OnDemandSource`
(the AWS Pricing API, or the sandbox's published list) and are cached on disk for a
week, because list prices change a few times a year and the Pricing API takes about a
second per type. Spot prices come from a `SpotSource` (EC2's DescribeSpotPriceHistory)
and move hourly, so they are cached in memory for 10 minutes.
Everything blocking runs in worker threads; only `models` records leave this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cloudsh.errors import AWSError, CloudshError
from cloudsh.models import (
    Price,
    SpotPricePoint,
    hourly_cost,  # noqa: F401  (re-exported)
)
from cloudsh.services.aws import BotoCoreError, ClientError, ClientFactory
from cloudsh.services.ec2_calls import translate, translate_botocore

ON_DEMAND_TTL = timedelta(days=7)
SPOT_TTL = timedelta(minutes=10)
#: The Pricing API is served from a few regions only; us-east-1 answers for all.
PRICING_REGION = "us-east-1"
#: Instance types per DescribeSpotPriceHistory request.
SPOT_BATCH = 25
_FILTERS = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}


def _now() -> datetime:
    return datetime.now(UTC)


def price_error(exc: ClientError | BotoCoreError, clients: ClientFactory) -> CloudshError:
    """A botocore error from a price request -> "cannot fetch prices: …" with a hint."""
    if isinstance(exc, ClientError):
        err = translate(exc, clients.target.profile)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return AWSError(
                f"cannot fetch prices: not allowed to call {exc.operation_name}",
                "allow pricing:GetProducts and ec2:DescribeSpotPriceHistory for your IAM "
                "identity; everything else works without prices",
                code,
            )
    else:
        err = translate_botocore(exc, clients.target)
    message = f"cannot fetch prices: {err.message}"
    if isinstance(err, AWSError):
        return type(err)(message, err.hint, err.code)
    return type(err)(message, err.hint)


class OnDemandSource(Protocol):
    """Where on-demand $/h come from. `fetch` blocks; types it cannot price are absent.

    Raises:
        CloudshError: the source could not be asked at all (credentials, network, IAM).
    """

    label: str

    def fetch(self, types: Sequence[str]) -> dict[str, float]: ...


class AwsOnDemandSource:
    """The AWS Pricing API: one `GetProducts` query per instance type, a few at a time."""

    def __init__(self, clients: ClientFactory, region: str, *, workers: int = 4) -> None:
        self._clients = clients
        self.region = region
        self.workers = workers
        self.label = f"AWS Pricing API, {region} Linux on-demand"

    def fetch(self, types: Sequence[str]) -> dict[str, float]:
        if not types:
            return {}
        # One (thread-safe) client shared by the pool: building one per thread costs more
        # than the few requests each thread makes.
        client = self._clients.client("pricing", PRICING_REGION)
        out: dict[str, float] = {}
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(types)))) as pool:
                for name, usd in zip(
                    types, pool.map(lambda t: self._one(client, t), types), strict=True
                ):
                    if usd is not None:
                        out[name] = usd
        except (ClientError, BotoCoreError) as exc:
            raise price_error(exc, self._clients) from None
        return out

    def _one(self, client: Any, instance_type: str) -> float | None:
        filters = [{"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type}]
        filters.append({"Type": "TERM_MATCH", "Field": "regionCode", "Value": self.region})
        filters += [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in _FILTERS.items()]
        for page in client.get_paginator("get_products").paginate(
            ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"
        ):
            for item in page.get("PriceList", ()):
                usd = on_demand_usd(item, instance_type)
                if usd is not None:
                    return usd
        return None


def on_demand_usd(item: str | dict[str, Any], instance_type: str) -> float | None:
    """The OnDemand USD per hour in one GetProducts `PriceList` document, if it has one."""
    try:
        doc = json.loads(item) if isinstance(item, str) else item
        if doc["product"]["attributes"].get("instanceType") != instance_type:
            return None
        for offer in doc.get("terms", {}).get("OnDemand", {}).values():
            for dim in offer.get("priceDimensions", {}).values():
                if dim.get("unit") == "Hrs":
                    usd = float(dim["pricePerUnit"]["USD"])
                    # $0 rows are capacity reservations and the like, not a price.
                    if usd > 0:
                        return usd
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


class SpotSource(Protocol):
    """Where spot prices come from. `history` blocks.

    `history(types, start)` is the price in force at `start` per type and AZ; with `end`,
    every change between the two as well. Types it has no price for are absent.

    Raises:
        CloudshError: the source could not be asked at all (credentials, network, IAM).
    """

    label: str

    def history(
        self, types: Sequence[str], start: datetime, end: datetime | None = None
    ) -> list[SpotPricePoint]: ...


class Ec2SpotSource:
    """EC2's DescribeSpotPriceHistory (Linux/UNIX), `SPOT_BATCH` types a request."""

    def __init__(self, clients: ClientFactory, region: str, *, label: str | None = None) -> None:
        self._clients = clients
        self.region = region
        self.label = label or f"spot: EC2 spot price history, {region}"

    def history(
        self, types: Sequence[str], start: datetime, end: datetime | None = None
    ) -> list[SpotPricePoint]:
        window: dict[str, Any] = {"StartTime": start}
        if end is not None:
            window["EndTime"] = end
        client = self._clients.client("ec2", self.region)
        points: list[SpotPricePoint] = []
        try:
            for i in range(0, len(types), SPOT_BATCH):
                pages = client.get_paginator("describe_spot_price_history").paginate(
                    InstanceTypes=list(types[i : i + SPOT_BATCH]),
                    ProductDescriptions=["Linux/UNIX"],
                    **window,
                )
                for page in pages:
                    points.extend(_points(page.get("SpotPriceHistory", ())))
        except (ClientError, BotoCoreError) as exc:
            raise price_error(exc, self._clients) from None
        return points


def _points(rows: Iterable[dict[str, Any]]) -> Iterator[SpotPricePoint]:
    """History rows as records; a row missing a field is skipped, not fatal."""
    for r in rows:
        try:
            yield SpotPricePoint(
                str(r["InstanceType"]),
                str(r["AvailabilityZone"]),
                float(r["SpotPrice"]),
                _utc(r["Timestamp"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue


@dataclass(frozen=True)
class _OnDemand:
    usd: float | None
    at: datetime


@dataclass(frozen=True)
class _Spot:
    usd: float | None
    az: str | None
    at: datetime


class PricingService:
    """On-demand + current spot prices per instance type, cached; see the module doc."""

    def __init__(
        self,
        clients: ClientFactory,
        region: str,
        on_demand: OnDemandSource,
        cache_dir: Path,
        *,
        spot: SpotSource | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.clients = clients
        self.region = region
        self.on_demand = on_demand
        self.spot = spot or Ec2SpotSource(clients, region)
        self._clock = clock
        digest = hashlib.sha1(on_demand.label.encode()).hexdigest()[:8]
        self.cache_file = cache_dir / f"on-demand-{region}-{digest}.json"
        self._od: dict[str, _OnDemand] | None = None
        self._spot: dict[str, _Spot] = {}
        self._od_lock = threading.Lock()
        self._spot_lock = threading.Lock()
        self.last_error: CloudshError | None = None
        """The error behind the last incomplete `prices(strict=False)` answer, if any."""

    async def prices(
        self, types: Sequence[str], *, strict: bool = True, spot_for: Sequence[str] | None = None
    ) -> dict[str, Price]:
        """Prices for `types`; types with neither an on-demand nor a spot price are absent.

        `spot_for` limits the spot lookup to those types (e.g. only the types of spot
        boxes when listing instances); by default every type gets its spot price.

        Raises:
            CloudshError: a price request failed (only when `strict`; otherwise the answer
                holds what is cached or known, and `last_error` says what went wrong).
        """
        names = list(dict.fromkeys(types))
        self.last_error = None
        od, spot = await asyncio.gather(
            asyncio.to_thread(self._on_demand_sync, names, strict),
            asyncio.to_thread(
                self._spot_sync, names if spot_for is None else list(dict.fromkeys(spot_for)), strict
            ),
        )
        source = f"{self.on_demand.label}; {self.spot.label}"
        out: dict[str, Price] = {}
        for name in names:
            o, s = od.get(name), spot.get(name)
            if (o is None or o.usd is None) and (s is None or s.usd is None):
                continue
            times = [x.at for x in (o, s) if x is not None]
            out[name] = Price(
                instance_type=name,
                on_demand=o.usd if o else None,
                spot=s.usd if s else None,
                spot_az=s.az if s else None,
                fetched_at=min(times),
                source=source,
            )
        return out

    async def spot_history(self, instance_type: str, days: float = 7) -> list[SpotPricePoint]:
        """Linux spot price changes over the last `days`, every AZ, oldest first."""
        end = self._clock()
        points = await asyncio.to_thread(
            self.spot.history, [instance_type], end - timedelta(days=days), end
        )
        mine = [p for p in points if p.instance_type == instance_type]
        return sorted(mine, key=lambda p: (p.at, p.az))

    def cache_age(self) -> float | None:
        """Seconds since the oldest cached on-demand price was fetched; None if none is."""
        with self._od_lock:
            cache = self._load()
        if not cache:
            return None
        oldest = min(e.at for e in cache.values())
        return max(0.0, (self._clock() - oldest).total_seconds())

    # -- on-demand ---------------------------------------------------------------

    def _on_demand_sync(self, names: list[str], strict: bool) -> dict[str, _OnDemand]:
        with self._od_lock:
            cache = self._load()
            now = self._clock()
            missing = [n for n in names if n not in cache or now - cache[n].at >= ON_DEMAND_TTL]
            if missing:
                try:
                    fetched = self.on_demand.fetch(missing)
                except CloudshError as exc:
                    if strict:
                        raise
                    self.last_error = exc
                else:
                    # Unpriceable types are remembered too, so they are not asked again.
                    cache.update({n: _OnDemand(fetched.get(n), now) for n in missing})
                    self._save(cache)
            return {n: cache[n] for n in names if n in cache}

    def _load(self) -> dict[str, _OnDemand]:
        if self._od is None:
            self._od = self._read_file()
        return self._od

    def _read_file(self) -> dict[str, _OnDemand]:
        try:
            raw = json.loads(self.cache_file.read_text())
            return {
                name: _OnDemand(
                    None if e["usd"] is None else float(e["usd"]),
                    datetime.fromtimestamp(float(e["at"]), UTC),
                )
                for name, e in raw["prices"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # no cache, or an unreadable one: fetch afresh

    def _save(self, cache: dict[str, _OnDemand]) -> None:
        # Another cloudsh process may have cached other types meanwhile: keep them.
        merged = {**self._read_file(), **cache}
        data = {
            "source": self.on_demand.label,
            "region": self.region,
            "prices": {n: {"usd": e.usd, "at": e.at.timestamp()} for n, e in merged.items()},
        }
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
            tmp.replace(self.cache_file)
        except OSError:
            pass  # the cache only saves time; never fail a price lookup over it

    # -- spot ----------------------------------------------------------------------

    def _spot_sync(self, names: list[str], strict: bool) -> dict[str, _Spot]:
        with self._spot_lock:
            now = self._clock()
            missing = [
                n for n in names if n not in self._spot or now - self._spot[n].at >= SPOT_TTL
            ]
            if missing:
                try:
                    points = self.spot.history(missing, now)
                except CloudshError as exc:
                    if strict:
                        raise
                    self.last_error = exc
                else:
                    self._spot.update(_lowest(points, missing, now))
            return {n: self._spot[n] for n in names if n in self._spot}


def _lowest(
    points: Iterable[SpotPricePoint], names: Sequence[str], now: datetime
) -> dict[str, _Spot]:
    """The cheapest AZ's current price per type (the latest point per AZ wins)."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for p in points:
        key = (p.instance_type, p.az)
        if key not in latest or p.at > latest[key][0]:
            latest[key] = (p.at, p.price)
    out = {n: _Spot(None, None, now) for n in names}
    for (name, az), (_, usd) in sorted(latest.items()):
        best = out.get(name)
        if best is not None and (best.usd is None or usd < best.usd):
            out[name] = _Spot(usd, az, now)
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
