"""AWS's own figure for the month so far, from Cost Explorer's GetCostAndUsage.

Cost Explorer lags about a day and each request costs $0.01 ("AWS Cost Management
pricing", https://aws.amazon.com/aws-cost-management/pricing/), so it is asked at most once
a day per profile and the answer (or why there is none) is cached on disk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloudsh.services.aws import BotoCoreError, ClientError, ClientFactory
from cloudsh.services.ec2_calls import translate, translate_botocore

CE_TTL = timedelta(days=1)
#: Cost Explorer has one endpoint, in us-east-1 (ce.us-east-1.amazonaws.com).
CE_REGION = "us-east-1"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AwsFigure:
    """The month so far as AWS bills it (None when unknown), and where it came from or why
    it is missing."""

    usd: float | None
    fetched_at: datetime
    note: str


class CostExplorer:
    def __init__(self, clients: ClientFactory, cache_dir: Path, *, clock: Callable[[], datetime] = _now) -> None:
        self._clients = clients
        self._clock = clock
        profile = clients.target.profile or "default"
        self.cache_file = cache_dir / f"cost-explorer-{profile}.json"

    def month_to_date(self) -> AwsFigure:
        """Blocks: the cached figure when under a day old and of this month, else one request."""
        now = self._clock()
        cached = self._read()
        if cached and now - cached.fetched_at < CE_TTL and cached.fetched_at.strftime("%Y-%m") == now.strftime("%Y-%m"):
            return cached
        start = now.date().replace(day=1)
        try:
            answer = self._clients.client("ce", CE_REGION).get_cost_and_usage(
                TimePeriod={"Start": start.isoformat(), "End": (now.date() + timedelta(days=1)).isoformat()},
                Granularity="MONTHLY",
                Metrics=["UnblendedCost"],
            )
            usd = sum(float(r["Total"]["UnblendedCost"]["Amount"]) for r in answer.get("ResultsByTime", ()))
            figure = AwsFigure(round(usd, 2), now, "AWS Cost Explorer (about a day behind)")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            why = "not allowed (IAM action ce:GetCostAndUsage)" if "Denied" in code or "Unauthorized" in code \
                else translate(exc, self._clients.target.profile).message
            figure = AwsFigure(None, now, f"Cost Explorer: {why}")
        except BotoCoreError as exc:  # offline: not cached, asked again next time
            return AwsFigure(None, now, f"Cost Explorer: {translate_botocore(exc, self._clients.target).message}")
        self._write(figure)
        return figure

    def _read(self) -> AwsFigure | None:
        try:
            raw = json.loads(self.cache_file.read_text())
            usd = raw["usd"]
            return AwsFigure(None if usd is None else float(usd), datetime.fromisoformat(raw["at"]), str(raw["note"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, figure: AwsFigure) -> None:
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"usd": figure.usd, "at": figure.fetched_at.isoformat(), "note": figure.note}))
            tmp.replace(self.cache_file)
        except OSError:
            pass  # the cache only saves money; never fail over it
