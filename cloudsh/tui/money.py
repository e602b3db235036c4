"""The money meter in the app: the month's projection and budget in the status bar (which
turns colour at 50, 80 and 100 % of the budget, with a notification once per crossing),
and the orphans' monthly total in the Volumes pane's title. Fetched off the event loop
by the same code as `cost` and `orphans`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any

from cloudsh.commands.views import burn_rate, money
from cloudsh.errors import CloudshError
from cloudsh.ops.money import budget_level, budget_warning, cost_report
from cloudsh.ops.orphans import sweep
from cloudsh.tui.output import PaneOutput
from cloudsh.tui.volumes import VolumesPane
from cloudsh.tui.widgets import MoneyLoaded, StatusBar

if TYPE_CHECKING:
    from cloudsh.tui.host import AppHost


async def load(app: AppHost) -> None:
    """One `cost` and one `orphans` of this region, then the status bar shows them."""
    if app.backend is None:
        return  # not connected (yet): the next refresh tries again
    backend = app.context(PaneOutput(app.log_line)).backend
    try:
        report, found = await asyncio.gather(cost_report(backend), sweep(backend))
    except CloudshError as exc:
        app.log_line(f"cannot estimate the month's cost: {exc}", "error")
        return
    level = budget_level(report.month_projection, report.budget) if report.budget else 0.0
    app.main(StatusBar).post_message(
        MoneyLoaded(report.month_projection, report.budget, level, budget_warning(backend.settings, "app"),
                    report.total("per_hour", ("ipv4",)))
    )
    app.main(VolumesPane).show_orphans(len(found.orphans), found.per_month)


def say_leaving(records: list[dict[str, Any]]) -> None:
    """On leaving the app: what the boxes left running burn per hour (stderr, one line)."""
    running = [r for r in records if r["state"] in ("running", "pending")]
    if not running:
        return
    names = ", ".join(str(r["name"] or r["id"]) for r in running[:5]) + (", …" if len(running) > 5 else "")
    with contextlib.suppress(OSError):
        sys.stderr.write(
            f"cloudsh: {len(running)} box(es) still running ({names}), burning {money(burn_rate(records))}; "
            "`cloudsh stop NAME` stops one\n"
        )
