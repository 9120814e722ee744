"""The results as a rich table, for the console: 80 columns by default, every column wide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from forkwire.client.demo.config import REFERENCE_LABEL
from forkwire.client.demo.metrics import Rate
from forkwire.client.demo.results import DemoResult, RunResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

TITLE = "forkwire demo: TCP vs UDP loss"


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


def _count(value: int) -> str:
    # A cause that lost nothing is a dash, so the cause that did stands out in its row.
    return f"{value:,}" if value else "—"


def _offered(rate: Rate) -> str:
    return "max" if rate == "max" else f"{rate:,}"


def _stored(row: dict[str, Any]) -> int | None:
    return None if row["sent"] is None else int(row["sent"] - row["lost"])


def render_table(result: DemoResult, *, wide: bool = False) -> Table:
    """The results as a rich table: one row per run, then the iperf3 reference rows.

    By default the columns fit 80 characters with every row on one line: the loss is split
    into a column per cause, the noise spec moves to the caption, and latency, jitter,
    order and duplicates are left to ``wide`` (all columns, about 160 characters) and to
    demo.json.
    """
    return _wide_table(result) if wide else _narrow_table(result)


def _narrow_table(result: DemoResult) -> Table:
    from rich import box
    from rich.table import Table

    notes = [
        "offered, achieved: readings/s; --wide shows every column",
        "lost to kernel: the server's UDP receive buffer was full; other: elsewhere",
    ]
    specs = sorted({run.noise for run in result.runs if run.noise is not None})
    if specs:
        notes.append(f"lost to noise: dropped before the wire (+noise runs: {', '.join(specs)})")
    if result.reference:
        notes.append(f"iperf3: UDP at the same packet rate and size, {REFERENCE_LABEL}")
    notes += result.notes
    notes += [
        f"iperf3 at {_offered(row['offered_rate'])}/s: {row['error']}"
        for row in result.reference
        if row["error"]
    ]
    table = Table(
        title=TITLE,
        box=box.SIMPLE_HEAVY,
        # Two spaces between columns (the box's blank separator and one of padding), none
        # at the edges: 76 characters with iperf3's 6-digit packet counts.
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        caption="\n".join(notes),
        caption_justify="left",
    )
    table.add_column("transport", no_wrap=True)
    for header in ("offered", "sent", "stored", "loss %", "noise", "kernel", "other",
                   "achieved"):  # fmt: skip
        table.add_column(header, justify="right", no_wrap=True)
    for run in result.runs:
        table.add_row(
            run.transport + ("+noise" if run.noise else ""),
            _offered(run.offered_rate),
            _cell(run.sent),
            _cell(run.stored),
            _cell(run.loss_pct, 2),
            _count(run.lost_noise),
            _count(run.lost_kernel),
            _count(run.lost_elsewhere),
            _cell(run.achieved_rate),
        )
    if result.reference:
        table.add_section()
    for row in result.reference:
        table.add_row(
            "iperf3",
            _offered(row["offered_rate"]),
            _cell(row["sent"]),
            _cell(_stored(row)),
            _cell(row["loss_pct"], 2),
            "—",
            "—",
            "—",
            _cell(row["achieved_rate"]),
        )
    return table


def _wide_table(result: DemoResult) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(
        title=TITLE,
        box=box.SIMPLE_HEAVY,
        caption="\n".join(result.notes),
        caption_justify="left",
    )
    for header in ("transport", "offered/s", "noise"):
        table.add_column(header, no_wrap=True)
    for header in ("sent", "stored", "lost", "loss %", "ooo", "dup", "jitter ms", "p50 ms",
                   "p99 ms", "achieved/s", "kernel drops"):  # fmt: skip
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("lost to", no_wrap=True)
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
            _cell(_stored(row)),
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


def print_table(console: Console, result: DemoResult, *, wide: bool = False) -> None:
    """Print the table once; a wide table at its full width even on a narrower terminal.

    The terminal folds the long lines, but no cell loses digits to an ellipsis (asked for
    every column, a user pipes it to ``less -S`` or widens the window).
    """
    table = render_table(result, wide=wide)
    if not wide:
        console.print(table)
        return
    from rich.segment import Segments

    # Console.print never lays out wider than the console: render at the table's own width
    # and print the lines as they are.
    unbounded = console.options.update_width(10_000)
    width = max(console.width, console.measure(table, options=unbounded).maximum)
    lines = console.render_lines(table, console.options.update_width(width), new_lines=True)
    console.print(
        Segments(segment for line in lines for segment in line), crop=False, soft_wrap=True
    )
