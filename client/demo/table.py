"""The results as a rich table, for the console."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forkwire.client.demo.config import REFERENCE_LABEL
from forkwire.client.demo.metrics import Rate
from forkwire.client.demo.results import DemoResult, RunResult

if TYPE_CHECKING:
    from rich.table import Table


def _attribution(run: RunResult) -> str:
    if not run.lost:
        return "—"
    parts = [
        f"{label} {value:,}"
        for label, value in (
            ("noise", run.lost_noise),
            ("kernel", run.lost_kernel),
            ("other", run.lost_elsewhere),
        )
        if value
    ]
    return ", ".join(parts)


def _cell(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _offered(rate: Rate) -> str:
    return "max" if rate == "max" else f"{rate:,}"


def render_table(result: DemoResult) -> Table:
    """The results as a rich table: one row per run, then the iperf3 reference rows."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="forkwire demo: TCP vs UDP loss",
        box=box.SIMPLE_HEAVY,
        caption="\n".join(result.notes),
        caption_justify="left",
    )
    for header in ("transport", "offered/s", "noise"):
        table.add_column(header, no_wrap=True)
    for header in ("sent", "stored", "lost", "loss %", "ooo", "dup", "jitter ms", "p50 ms",
                   "p99 ms", "achieved/s", "kernel drops"):  # fmt: skip
        table.add_column(header, justify="right")
    table.add_column("lost to")
    for run in result.runs:
        table.add_row(
            run.transport,
            _offered(run.offered_rate),
            run.noise or "—",
            _cell(run.sent),
            _cell(run.stored),
            _cell(run.lost),
            _cell(run.loss_pct, 2),
            _cell(run.out_of_order),
            _cell(run.duplicates),
            _cell(run.jitter_ms, 2),
            _cell(run.p50_ms, 1),
            _cell(run.p99_ms, 1),
            _cell(run.achieved_rate),
            _cell(run.kernel_drops),
            _attribution(run),
        )
    if result.reference:
        table.add_section()
    for row in result.reference:
        table.add_row(
            "udp iperf3",
            _offered(row["offered_rate"]),
            "—",
            _cell(row["sent"]),
            _cell(None if row["sent"] is None else row["sent"] - row["lost"]),
            _cell(row["lost"]),
            _cell(row["loss_pct"], 2),
            "—",
            "—",
            _cell(row["jitter_ms"], 2),
            "—",
            "—",
            _cell(row["achieved_rate"]),
            "—",
            row["error"] or REFERENCE_LABEL,
        )
    return table
