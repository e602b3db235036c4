"""What the panes show, fetched through the same code as the commands, and the
on-disk copy of the last listing that paints the next start instantly."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloudsh.commands.registry import Context
from cloudsh.models import (
    Image,
    InstanceType,
    Price,
    Snapshot,
    SpotPricePoint,
    Volume,
    snapshot_monthly,
    volume_monthly,
)
from cloudsh.ops.queries import listing, priced_types


async def fetch_instances(ctx: Context) -> list[dict[str, Any]]:
    """`ls --json` records (one DescribeInstances, types and prices from caches)."""
    return await listing(ctx.backend)


async def fetch_prices(
    ctx: Context,
) -> tuple[list[tuple[InstanceType, Price | None]], str, datetime | None, str]:
    """Types of the common families with their prices, as `cloudsh prices` lists them, the
    source, when they were fetched, and why prices are missing ("" when none is)."""
    found = await priced_types(ctx.backend)
    ordered = sorted(found.types, key=lambda t: (t.gpu_count == 0, t.family, t.vcpus, t.memory_gib))
    rows = [(t, found.prices.get(t.name)) for t in ordered]
    sample = next(iter(found.prices.values()), None)
    return rows, sample.source if sample else "", sample.fetched_at if sample else None, found.note


async def fetch_spot_history(ctx: Context, instance_type: str, days: float = 2) -> list[SpotPricePoint]:
    return list(await ctx.backend.pricing.spot_history(instance_type, days=days))


async def fetch_storage(ctx: Context) -> tuple[list[Volume], list[Snapshot], list[Image], str]:
    """Volumes, snapshots and images, and the region whose list prices cost them."""
    ec2 = ctx.backend.ec2
    vols, snaps, images = await asyncio.gather(ec2.volumes(), ec2.snapshots(), ec2.images())
    return vols, snaps, images, ctx.backend.target.region


def volume_month(v: Volume, region: str) -> float:
    return volume_monthly(v, region)


def snapshot_month(s: Snapshot, region: str) -> float:
    return snapshot_monthly(s.size_gb, region)


def image_month(img: Image, snaps: dict[str, Snapshot], region: str) -> float | None:
    sizes = [snaps[s].size_gb for s in img.snapshot_ids if s in snaps]
    return snapshot_monthly(sum(sizes), region) if sizes else None


def hourly(points: list[SpotPricePoint], hours: int = 48) -> list[float]:
    """The lowest price per hour across AZs, oldest first, for a sparkline."""
    if not points:
        return []
    end = max(p.at for p in points)
    start = end - timedelta(hours=hours)
    buckets: dict[int, float] = {}
    for p in points:
        if p.at <= start:
            continue
        slot = int((p.at - start).total_seconds() // 3600)
        buckets[slot] = min(p.price, buckets.get(slot, p.price))
    return [buckets[k] for k in sorted(buckets)]


# -- the last listing, cached for an instant first paint ---------------------------


@dataclass(frozen=True)
class CachedListing:
    label: str
    records: list[dict[str, Any]]
    saved_at: datetime


def listing_cache_path(cache_dir: Path) -> Path:
    return cache_dir / "tui-last-listing.json"


def load_listing(cache_dir: Path) -> CachedListing | None:
    try:
        raw = json.loads(listing_cache_path(cache_dir).read_text())
        return CachedListing(str(raw["label"]), list(raw["records"]), datetime.fromisoformat(raw["saved_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no cache (or a broken one): the first refresh fills the pane


def save_listing(cache_dir: Path, label: str, records: list[dict[str, Any]]) -> None:
    path = listing_cache_path(cache_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"label": label, "saved_at": datetime.now(UTC).isoformat(), "records": records}))
        tmp.replace(path)
    except OSError:
        pass  # a cache is an optimisation; never fail the app over it


def theme_path(state_dir: Path) -> Path:
    return state_dir / "tui-theme"


def load_theme(state_dir: Path) -> str:
    """The theme picked last time (Textual's theme chooser, in the command palette); "" if none."""
    try:
        return theme_path(state_dir).read_text().strip()
    except OSError:
        return ""


def save_theme(state_dir: Path, theme: str) -> None:
    """Remember the theme for the next start (written only when it changed)."""
    if theme == load_theme(state_dir):
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        theme_path(state_dir).write_text(theme + "\n")
    except OSError:
        pass  # remembering the theme is a nicety; never fail the app over it
