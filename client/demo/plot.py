"""``demo.png``: loss and achieved rate against the offered rate, with matplotlib."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forkwire.client.demo.config import REFERENCE_LABEL
from forkwire.client.demo.metrics import Rate
from forkwire.client.demo.results import DemoResult
from forkwire.client.extras import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _short_rate(rate: float) -> str:
    if rate >= 1_000_000 and rate % 100_000 == 0:
        return f"{rate / 1_000_000:g}M"
    if rate >= 1000 and rate % 100 == 0:
        return f"{rate / 1000:g}k"
    return f"{rate:g}"


def plot_demo(result: DemoResult, path: Path) -> None:
    """Two panels: loss % and achieved rate against the offered rate, a line per transport.

    The x axis is logarithmic; "max" (no pacing) has no rate of its own, so it sits at the
    right end, past a dashed break. Noise runs are left out: they are about attribution,
    not rate.

    Raises:
        MissingExtra: matplotlib (the ``plot`` extra) is not installed.
    """
    require("matplotlib", "plot", "demo.png")
    # The object API with an Agg canvas: no pyplot, so no global backend is switched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import (
        FixedFormatter,
        FixedLocator,
        FuncFormatter,
        NullFormatter,
        NullLocator,
    )

    clean = [run for run in result.runs if run.noise is None]
    numeric = sorted({float(run.offered_rate) for run in clean if run.offered_rate != "max"})
    has_max = any(run.offered_rate == "max" for run in clean)
    max_x = numeric[-1] * 4 if numeric else 1.0

    def x_of(rate: Rate) -> float:
        return max_x if rate == "max" else float(rate)

    def draw(ax: Axes, points: list[tuple[Rate, float]], label: str, **style: Any) -> None:
        # Paced points are joined by a line; "max" is joined to them by a dotted one, since
        # it is not a rate on the axis.
        paced = [(float(rate), y) for rate, y in points if rate != "max"]
        unpaced = [y for rate, y in points if rate == "max"]
        line = style.pop("linestyle", "-")
        if paced:
            ax.plot(*zip(*paced, strict=True), linestyle=line, label=label, **style)
            label = "_"
        if unpaced:
            if paced:
                ax.plot([paced[-1][0], max_x], [paced[-1][1], unpaced[0]], linestyle=":",
                        **{**style, "marker": None})  # fmt: skip
            ax.plot([max_x], unpaced[:1], linestyle="none", label=label, **style)

    figure = Figure(figsize=(13, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, rate_ax = figure.subplots(1, 2)
    styles = {"tcp": ("tab:blue", "o"), "udp": ("tab:orange", "s")}
    top_loss = 0.0
    for transport, (color, marker) in styles.items():
        runs = sorted(
            (run for run in clean if run.transport == transport),
            key=lambda run: x_of(run.offered_rate),
        )
        if not runs:
            continue
        style: dict[str, Any] = {"color": color, "marker": marker, "linewidth": 2}
        top_loss = max(top_loss, *(run.loss_pct for run in runs))
        lost, sent = sum(run.lost for run in runs), sum(run.sent for run in runs)
        draw(
            loss_ax,
            [(run.offered_rate, run.loss_pct) for run in runs],
            f"{transport.upper()} (lost {lost:,} of {sent:,})",
            **style,
        )
        for run in runs:
            if run.lost:
                loss_ax.annotate(
                    f"{run.loss_pct:.1f}%",
                    (x_of(run.offered_rate), run.loss_pct),
                    textcoords="offset points",
                    xytext=(-7, 5),
                    ha="right",
                    fontsize=8,
                    color=color,
                )
        draw(
            rate_ax,
            [(run.offered_rate, run.achieved_rate or math.nan) for run in runs],
            transport.upper(),
            **style,
        )
    reference = [row for row in result.reference if row.get("loss_pct") is not None]
    if reference:
        top_loss = max(top_loss, *(float(row["loss_pct"]) for row in reference))
        draw(
            loss_ax,
            sorted(
                ((row["offered_rate"], float(row["loss_pct"])) for row in reference),
                key=lambda point: x_of(point[0]),
            ),
            f"iperf3 UDP ({REFERENCE_LABEL})",
            color="0.4",
            marker="^",
            markersize=9,
            markerfacecolor="none",
            linestyle="--",
            zorder=3,  # hollow markers on top: at 0 % they share the TCP line
        )
    if numeric:
        rate_ax.plot(numeric, numeric, color="0.5", linestyle=":", label="achieved = offered")

    ticks = [*numeric, *([max_x] if has_max else [])]
    labels = [_short_rate(rate) for rate in numeric] + (["max"] if has_max else [])
    for ax in (loss_ax, rate_ax):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FixedFormatter(labels))
        ax.xaxis.set_minor_locator(NullLocator())
        if numeric and has_max:
            ax.axvline(math.sqrt(numeric[-1] * max_x), color="0.8", linestyle="--", linewidth=1)
        if ticks:
            ax.set_xlim(min(ticks) / 1.6, max(ticks) * 1.6)
        ax.set_xlabel("offered rate (readings/s; max = unpaced)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    loss_ax.set_ylim(-0.03 * max(top_loss * 1.2, 5), max(top_loss * 1.2, 5))
    loss_ax.set_ylabel("readings lost (%)")
    loss_ax.set_title("Loss vs offered rate")
    rate_ax.set_yscale("log")
    rate_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: _short_rate(value)))
    rate_ax.yaxis.set_minor_formatter(NullFormatter())
    rate_ax.set_ylabel("achieved send rate (readings/s)")
    rate_ax.set_title("Achieved vs offered rate")
    counts = sorted({run.sent for run in clean})
    per_run = f"{counts[0]:,} readings per run" if len(counts) == 1 else "readings per run vary"
    figure.suptitle(f"forkwire demo: TCP vs UDP over loopback ({per_run}; noise runs not plotted)")
    figure.savefig(path, dpi=110)
