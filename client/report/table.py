"""The report as a terminal table: one row per sensor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.table import Table


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render_table(report: Mapping[str, Any]) -> Table:
    """Return a rich table with one row per sensor of a report."""
    # No vertical rules, so nine columns fit an 80-column terminal without truncation.
    table = Table(title="forkwire sensor report", box=box.SIMPLE_HEAVY, pad_edge=False)
    table.add_column("sensor", style="bold")
    for name in ("count", "expected", "lost", "loss %", "rate Hz", "dropouts", "mean", "p95"):
        table.add_column(name, justify="right", min_width=len(name))
    for name, rep in report["sensors"].items():
        st = rep["stats"]
        table.add_row(
            name,
            f"{rep['count']:,}",
            f"{rep['expected']:,}",
            f"{rep['lost']:,}",
            f"{rep['loss_pct']:.2f}",
            _fmt(rep["rate_hz"], ".2f"),
            # The report lists the first dropouts and counts the rest.
            f"{len(rep['dropouts']) + rep.get('dropouts_omitted', 0):,}",
            _fmt(st and st["mean"], "#.4g"),
            _fmt(st and st["p95"], "#.4g"),
            style="red" if rep["lost"] else None,
        )
    omitted = report.get("sensors_omitted", 0)
    if omitted:
        table.caption = f"and {omitted:,} more sensors (ask for them with --sensor)"
    return table
