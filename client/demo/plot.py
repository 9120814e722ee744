"""``demo.png``: where the readings went, per rate and transport, with matplotlib.

The left panel is one pair of stacked bars (TCP | UDP) per offered rate and one for the
noise runs: each bar is 100 % of the readings sent, the losses by cause at its foot (so the
top of the coloured stack is the loss %, on the same scale as iperf3's loss marker) and
what was stored above them. The right panel is the achieved send rate against the offered
one: where the sender itself could not keep the pace, the rate on the left is not the rate
that was sent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from forkwire.client.demo.config import REFERENCE_LABEL
from forkwire.client.demo.metrics import Rate
from forkwire.client.demo.results import DemoResult, RunResult
from forkwire.client.extras import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: The parts of a bar, bottom to top: (label, colour). Losses first, so the top of the
#: coloured stack reads as the loss %.
PARTS: Final = (
    ("lost: noise (dropped on purpose)", "tab:purple"),
    ("lost: kernel receive buffer full", "tab:red"),
    ("lost: other", "tab:orange"),
    ("stored", "#b7dfb0"),
)
TRANSPORT_STYLES: Final = {"tcp": ("tab:blue", "o"), "udp": ("tab:orange", "s")}
_BAR_WIDTH: Final = 0.38


def _short_rate(rate: float) -> str:
    if rate >= 1_000_000 and rate % 100_000 == 0:
        return f"{rate / 1_000_000:g}M"
    if rate >= 1000 and rate % 100 == 0:
        return f"{rate / 1000:g}k"
    return f"{rate:g}"


def _rate_label(rate: Rate) -> str:
    return "max" if rate == "max" else f"{_short_rate(float(rate))}/s"


def _percent(value: float) -> str:
    if value == 0:
        return "0%"
    if value < 0.1:
        return "<0.1%"
    return f"{value:.1f}%" if value < 99.95 else "100%"


def _shares(run: RunResult) -> list[float]:
    """The bar's parts in % of the readings sent, in the order of :data:`PARTS`."""
    if run.sent <= 0:
        return [0.0] * len(PARTS)
    counts = (run.lost_noise, run.lost_kernel, run.lost_elsewhere, run.stored)
    return [100 * count / run.sent for count in counts]


def plot_demo(result: DemoResult, path: Path) -> None:
    """Draw demo.png: stored and lost by cause per rate and transport, iperf3's loss as a
    marker on each UDP bar, and the achieved against the offered rate.

    Raises:
        MissingExtra: matplotlib (the ``plot`` extra) is not installed.
    """
    require("matplotlib", "plot", "demo.png")
    demo_figure(result).savefig(path, dpi=100)


def demo_figure(result: DemoResult) -> Figure:
    """The figure of :func:`plot_demo`. Each bar part has the gid
    ``"<transport>|<group label>|<part label>"`` and each iperf3 marker ``"iperf3|<rate>"``,
    so a test can find them."""
    # The object API with an Agg canvas: no pyplot, so no global backend is switched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 6.2), layout="constrained")
    FigureCanvasAgg(figure)
    bars_ax, rate_ax = figure.subplots(1, 2, width_ratios=(2.3, 1))
    _draw_bars(bars_ax, result)
    _draw_rates(rate_ax, result)
    counts = sorted({run.sent for run in result.runs if run.noise is None})
    per_run = (
        f"{counts[0]:,} readings per run"
        if len(counts) == 1
        else "readings per run vary"
        if counts
        else "no runs"
    )
    figure.suptitle(f"forkwire demo: where the readings went, TCP vs UDP over loopback ({per_run})")
    return figure


def _groups(result: DemoResult) -> list[tuple[str, dict[str, RunResult], Rate | None]]:
    """(label, runs by transport, the rate of iperf3's row or None) per pair of bars: the
    clean runs by rate, in order, then the noise runs."""
    groups: list[tuple[str, dict[str, RunResult], Rate | None]] = []
    index: dict[tuple[Rate, str | None], int] = {}
    for run in result.runs:
        key = (run.offered_rate, run.noise)
        if key not in index:
            index[key] = len(groups)
            label = _rate_label(run.offered_rate)
            if run.noise is not None:
                label = f"{label}\n+ noise {run.noise}"
            groups.append((label, {}, None if run.noise is not None else run.offered_rate))
        groups[index[key]][1][run.transport] = run
    clean = [group for group in groups if group[2] is not None]
    return clean + [group for group in groups if group[2] is None]


def _draw_bars(ax: Axes, result: DemoResult) -> None:
    groups = _groups(result)
    reference = {
        row["offered_rate"]: row for row in result.reference if row.get("loss_pct") is not None
    }
    ticks: list[float] = []
    tick_labels: list[str] = []
    for x, (label, runs, rate) in enumerate(groups):
        for offset, transport in ((-0.21, "tcp"), (0.21, "udp")):
            run = runs.get(transport)
            if run is None:
                continue
            bar_x = x + offset
            ticks.append(bar_x)
            tick_labels.append(transport.upper())
            bottom = 0.0
            for (part, colour), share in zip(PARTS, _shares(run), strict=True):
                if share > 0:
                    ax.bar(
                        bar_x,
                        share,
                        _BAR_WIDTH,
                        bottom=bottom,
                        color=colour,
                        edgecolor="white",
                        linewidth=0.5,
                        gid=f"{transport}|{label}|{part}",
                    )
                bottom += share
            # A loss too thin to see still shows: a line at the foot of the bar.
            if 0 < run.loss_pct < 1:
                ax.plot(
                    [bar_x - _BAR_WIDTH / 2, bar_x + _BAR_WIDTH / 2],
                    [0, 0],
                    color=_loss_colour(run),
                    linewidth=4,
                    solid_capstyle="butt",
                    clip_on=False,
                )
            ax.annotate(
                _percent(run.loss_pct),
                (bar_x, 100),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90 if len(groups) > 7 else 0,
                fontweight="bold" if run.lost else "normal",
            )
            if transport == "udp" and rate is not None and rate in reference:
                row = reference[rate]
                loss = float(row["loss_pct"])
                ax.plot(
                    [bar_x],
                    [loss],
                    marker="D",
                    markersize=8,
                    color="black",
                    markerfacecolor="white",
                    markeredgewidth=1.5,
                    zorder=5,
                    clip_on=False,
                    gid=f"iperf3|{rate}",
                )
                text = f"iperf3 {_percent(loss)}"
                if rate == "max" and row.get("achieved_rate"):
                    # Unpaced iperf3 sends at its own pace, not ours: say which.
                    text += f"\nat {_short_rate(round(float(row['achieved_rate']), -3))}/s"
                ax.annotate(
                    text,
                    (bar_x, loss),
                    xytext=(9, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7.5,
                    zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                )
    ax.set_xticks(ticks, tick_labels, fontsize=8)
    ax.tick_params(axis="x", length=0)
    for x, (label, _runs, rate) in enumerate(groups):
        ax.annotate(
            label,
            (x, 0),
            xycoords=("data", "axes fraction"),
            xytext=(0, -18),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=9,
            fontweight="bold" if rate is not None else "normal",
        )
        if rate is None and x > 0:
            ax.axvline(x - 0.5, color="0.6", linestyle="--", linewidth=1)
    ax.set_xlim(-0.6, max(len(groups), 1) - 0.4)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("% of readings sent (top of the colour: loss %)")
    ax.set_xlabel("offered rate (readings/s; max = unpaced)", labelpad=30)
    title = "Stored and lost, by cause"
    if result.udp_rcvbuf is not None:
        title += f" (the server's UDP receive buffer: {result.udp_rcvbuf / 1024:,.0f} KiB)"
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _legend(ax, bool(reference))


def _loss_colour(run: RunResult) -> str:
    counts = (run.lost_noise, run.lost_kernel, run.lost_elsewhere)
    return PARTS[counts.index(max(counts))][1]


def _legend(ax: Axes, with_reference: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Any] = [Patch(color=colour, label=label) for label, colour in reversed(PARTS)]
    if with_reference:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="D",
                markersize=7,
                color="black",
                markerfacecolor="white",
                label=f"iperf3 UDP loss ({REFERENCE_LABEL})",
            )
        )
    # Below the panel, in one row, so no bar hides behind it.
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.17),
        ncol=len(handles),
        fontsize=8.5,
        frameon=False,
        handlelength=1.2,
        columnspacing=1.2,
    )


def _draw_rates(ax: Axes, result: DemoResult) -> None:
    """Achieved against offered rate, a line per transport; noise runs are left out (they
    are about attribution, not rate). "max" has no rate of its own, so it sits at the
    right end, past a dashed break."""
    from matplotlib.ticker import (
        FixedFormatter,
        FixedLocator,
        FuncFormatter,
        NullFormatter,
        NullLocator,
    )

    clean = [run for run in result.runs if run.noise is None and run.achieved_rate]
    numeric = sorted({float(run.offered_rate) for run in clean if run.offered_rate != "max"})
    has_max = any(run.offered_rate == "max" for run in clean)
    max_x = numeric[-1] * 4 if numeric else 1.0

    def x_of(rate: Rate) -> float:
        return max_x if rate == "max" else float(rate)

    for transport, (colour, marker) in TRANSPORT_STYLES.items():
        runs = sorted(
            (run for run in clean if run.transport == transport),
            key=lambda run: x_of(run.offered_rate),
        )
        paced = [
            (float(run.offered_rate), run.achieved_rate or math.nan)
            for run in runs
            if run.offered_rate != "max"
        ]
        unpaced = [run.achieved_rate or math.nan for run in runs if run.offered_rate == "max"]
        style: dict[str, Any] = {"color": colour, "marker": marker, "linewidth": 2}
        label = transport.upper()
        if paced:
            ax.plot(*zip(*paced, strict=True), label=label, **style)
            label = "_"
        if unpaced:
            if paced:
                # Dotted: "max" is not a rate on the axis.
                ax.plot(
                    [paced[-1][0], max_x],
                    [paced[-1][1], unpaced[0]],
                    linestyle=":",
                    color=colour,
                    linewidth=2,
                )
            ax.plot([max_x], unpaced[:1], linestyle="none", label=label, **style)
    if numeric:
        ax.plot(numeric, numeric, color="0.5", linestyle=":", label="achieved = offered")
    ticks = [*numeric, *([max_x] if has_max else [])]
    labels = [_short_rate(rate) for rate in numeric] + (["max"] if has_max else [])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter(labels))
    ax.xaxis.set_minor_locator(NullLocator())
    if numeric and has_max:
        ax.axvline(math.sqrt(numeric[-1] * max_x), color="0.8", linestyle="--", linewidth=1)
    if ticks:
        ax.set_xlim(min(ticks) / 1.6, max(ticks) * 1.6)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: _short_rate(value)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("offered rate (readings/s; max = unpaced)")
    ax.set_ylabel("achieved send rate (readings/s)")
    ax.set_title("Achieved vs offered send rate")
    ax.grid(True, which="major", alpha=0.3)
    if clean:
        ax.legend(loc="upper left", fontsize=9)
