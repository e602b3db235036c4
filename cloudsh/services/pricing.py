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
    Prices,
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


#: Error codes of a refused call (IAM) and of a throttled one, across EC2 and the Pricing API.
_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")
_THROTTLED = ("Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException")


def price_error(exc: ClientError | BotoCoreError, clients: ClientFactory, action: str) -> CloudshError:
    """A botocore error from a price request -> "cannot fetch prices: …" with a hint.

    `action` is the IAM action of the request (`pricing:GetProducts`), named when it is
    denied so the user can ask for exactly that permission.
    """
    api = "the Pricing API" if action.startswith("pricing:") else "EC2"
    if isinstance(exc, ClientError):
        err = translate(exc, clients.target.profile)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _DENIED:
            return AWSError(
                f"cannot fetch prices: not allowed to call {exc.operation_name} (IAM action {action})",
                f"allow {action} for your IAM identity; everything else works without prices",
                code,
            )
        if code in _THROTTLED:
            return AWSError(
                f"cannot fetch prices: {api} is throttling {exc.operation_name} requests ({code})",
                "try again in a minute; prices fetched before are still shown",
                code,
            )
    else:
        err = translate_botocore(exc, clients.target)
    message = f"cannot fetch prices: {err.message}"
    if isinstance(err, AWSError):
        return type(err)(message, err.hint, err.code)
    return type(err)(message, err.hint)


def price_reason(what: str, err: CloudshError) -> str:
    """One line saying why `what` ("on-demand prices") are missing, from a price error."""
    why = err.message.removeprefix("cannot fetch prices: ")
    return f"{what} unavailable: {why}" + (f"; {err.hint}" if err.hint else "")


class OnDemandSource(Protocol):
    """Where on-demand $/h come from. `fetch` blocks; types it cannot price are absent.

    Raises:
        CloudshError: the source could not be asked at all (credentials, network, IAM).
    """

    label: str
    #: Why a type it answered for has no price, e.g. "not sold in eu-west-3".
    unpriced: str

    def fetch(self, types: Sequence[str]) -> dict[str, float]: ...


class AwsOnDemandSource:
    """The AWS Pricing API: one `GetProducts` query per instance type, a few at a time."""

    def __init__(self, clients: ClientFactory, region: str, *, workers: int = 4) -> None:
        self._clients = clients
        self.region = region
        self.workers = workers
        self.label = f"AWS Pricing API, {region} Linux on-demand"
        self.unpriced = f"not sold in {region} (the Pricing API lists no Linux on-demand price)"

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
            raise price_error(exc, self._clients, "pricing:GetProducts") from None
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
            raise price_error(exc, self._clients, "ec2:DescribeSpotPriceHistory") from None
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
    usd: float | None  # the lowest AZ's
    az: str | None
    at: datetime
    by_az: dict[str, float]


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
        """The error behind the last incomplete `prices(strict=False)` answer, if any (the
        answer itself says why, in `Prices.note`; this is the error, for a caller to raise)."""

    async def prices(
        self, types: Sequence[str], *, strict: bool = True, spot_for: Sequence[str] | None = None
    ) -> Prices:
        """Prices for `types`; types with neither an on-demand nor a spot price are absent.

        `spot_for` limits the spot lookup to those types (e.g. only the types of spot
        boxes when listing instances); by default every type gets its spot price. Why a
        price is missing travels with the answer: `Price.note`, `Prices.missing` per type,
        `Prices.note` when a source could not be asked.

        Raises:
            CloudshError: a price request failed (only when `strict`; otherwise the answer
                holds what is cached or known, and says why the rest is missing).
        """
        names = list(dict.fromkeys(types))
        spot_names = names if spot_for is None else list(dict.fromkeys(spot_for))
        (od, od_error), (spot, spot_error) = await asyncio.gather(
            asyncio.to_thread(self._on_demand_sync, names, strict),
            asyncio.to_thread(self._spot_sync, spot_names, strict),
        )
        self.last_error = od_error or spot_error
        od_reason = price_reason("on-demand prices", od_error) if od_error else ""
        spot_reason = price_reason("spot prices", spot_error) if spot_error else ""
        source = f"{self.on_demand.label}; {self.spot.label}"
        out: dict[str, Price] = {}
        missing: dict[str, str] = {}
        for name in names:
            o, s = od.get(name), spot.get(name)
            why = []
            if o is None or o.usd is None:
                why.append(self.on_demand.unpriced if o is not None else od_reason)
            if name in spot_names and (s is None or s.usd is None):
                why.append(f"spot not offered in {self.region}" if s is not None else spot_reason)
            note = "; ".join(w for w in why if w)
            if (o is None or o.usd is None) and (s is None or s.usd is None):
                missing[name] = note
                continue
            times = [x.at for x in (o, s) if x is not None]
            out[name] = Price(
                instance_type=name,
                on_demand=o.usd if o else None,
                spot=s.usd if s else None,
                spot_az=s.az if s else None,
                fetched_at=min(times),
                source=source,
                spot_by_az=dict(s.by_az) if s else {},
                note=note,
            )
        unsold = frozenset(n for n in names if (o := od.get(n)) is not None and o.usd is None)
        return Prices(out, missing, "; ".join(r for r in (od_reason, spot_reason) if r), unsold)

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

    def _on_demand_sync(
        self, names: list[str], strict: bool
    ) -> tuple[dict[str, _OnDemand], CloudshError | None]:
        """Cached or fetched on-demand prices, and the error that kept some from being fetched."""
        error = None
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
                    error = exc
                else:
                    # Unpriceable types are remembered too, so they are not asked again.
                    cache.update({n: _OnDemand(fetched.get(n), now) for n in missing})
                    self._save(cache)
            return {n: cache[n] for n in names if n in cache}, error

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

    def _spot_sync(self, names: list[str], strict: bool) -> tuple[dict[str, _Spot], CloudshError | None]:
        """Cached or fetched current spot prices, and the error that kept some from being fetched."""
        error = None
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
                    error = exc
                else:
                    self._spot.update(_current(points, missing, now))
            return {n: self._spot[n] for n in names if n in self._spot}, error


def _current(
    points: Iterable[SpotPricePoint], names: Sequence[str], now: datetime
) -> dict[str, _Spot]:
    """Each AZ's current price per type (its latest point), and the cheapest AZ's."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for p in points:
        key = (p.instance_type, p.az)
        if key not in latest or p.at > latest[key][0]:
            latest[key] = (p.at, p.price)
    by_az: dict[str, dict[str, float]] = {n: {} for n in names}
    for (name, az), (_, usd) in sorted(latest.items()):
        if name in by_az:
            by_az[name][az] = usd
    out = {}
    for name, azs in by_az.items():
        # Ties go to the first AZ by name, so the answer does not depend on row order.
        if not azs:
            out[name] = _Spot(None, None, now, azs)
            continue
        az = min(azs, key=lambda z: (azs[z], z))
        out[name] = _Spot(azs[az], az, now, azs)
    return out


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
