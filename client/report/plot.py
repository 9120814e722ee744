"""``report.png``: each sensor's values, filled points, dropouts and rate, one panel each.

matplotlib (the ``plot`` extra) is imported when a plot is drawn, not before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from forkwire.client.extras import require
from forkwire.client.report.fetch import SensorSeries
from forkwire.protocol import AnalyticsReport, FillMethod

if TYPE_CHECKING:
    from matplotlib.axes import Axes

FloatArray = npt.NDArray[np.float64]

#: A vector with more components than this is drawn as its norm: beyond a handful of
#: lines a panel is unreadable.
MAX_PLOTTED_COMPONENTS: Final = 6

#: Observed readings get a dot only when there are few enough to tell apart.
MAX_MARKED_READINGS: Final = 400
#: Values of larger magnitude are left out of the plot (ingest refuses them; another
#: writer may have stored them): the axis arithmetic of matplotlib overflows near 1.8e308.
MAX_DRAWN_VALUE: Final = 1e300

#: Filled points get a circle only when there are at most this many.
MAX_MARKED_FILLED: Final = 2000

#: A dropout of one reading in an hour-long stream is narrower than a pixel; shading is
#: widened to this fraction of the time axis (about 4 px) so that every dropout shows.
MIN_SHADE_FRACTION: Final = 0.004


def windowed_rate(
    ts: npt.ArrayLike, window_s: float, *, step_s: float | None = None
) -> tuple[FloatArray, FloatArray]:
    """Return ``(centers, rates)``: readings per second in a window sliding over the stream.

    Windows are half-open ``[c - window_s/2, c + window_s/2)`` and lie wholly inside the
    stream's span, so edges do not read as a drop; a stream shorter than one window gives
    empty arrays. Centers advance by ``step_s`` (default a quarter window).

    Raises:
        ValueError: ``window_s`` or ``step_s`` is not a positive finite number.
    """
    step = window_s / 4 if step_s is None else step_s
    if not (np.isfinite(window_s) and window_s > 0 and np.isfinite(step) and step > 0):
        raise ValueError(f"window_s and step_s must be positive, got {window_s}, {step_s}")
    empty = np.empty(0, dtype=np.float64)
    # Sorted by time, not seq: searchsorted needs it and a window is a span of time.
    t = np.sort(np.asarray(ts, dtype=np.float64))
    if t.size < 2 or t[-1] - t[0] < window_s:
        return empty, empty.copy()
    n = int((t[-1] - t[0] - window_s) // step) + 1
    centers = t[0] + window_s / 2 + step * np.arange(n, dtype=np.float64)
    counts = np.searchsorted(t, centers + window_s / 2, side="left") - np.searchsorted(
        t, centers - window_s / 2, side="left"
    )
    return centers, counts.astype(np.float64) / window_s


def _rate_window(ts: FloatArray, rate: float | None) -> float | None:
    span = float(np.ptp(ts)) if ts.size else 0.0
    if rate is None or not rate > 0 or not 0 < span < float("inf"):
        return None
    return min(span, max(span / 40, 10 / rate))


def _utc(ts: float) -> str:
    # A stored ts may lie before year 1 or after 9999 (another writer): say so, not crash.
    try:
        return f"{dt.datetime.fromtimestamp(ts, dt.UTC):%Y-%m-%d %H:%M:%S}"
    except (OverflowError, OSError, ValueError):
        return f"{ts:.6g} s"


def dropout_spans(series: SensorSeries, t0: float, min_width: float) -> list[tuple[float, float]]:
    """The time spans to shade, relative to ``t0``: one per run of missing seqs of the
    observed readings, each at least ``min_width`` wide, overlapping ones merged.

    From the series rather than the report, which lists only the first dropouts; merged,
    because a span per dropout made 700,000 patches, minutes of drawing, for a panel a
    thousand pixels wide.
    """
    seq = series.seq[series.observed]
    ts = series.ts[series.observed] - t0
    at = np.flatnonzero(np.diff(seq) > 1)
    if at.size == 0:
        return []
    lo, hi = ts[at], ts[at + 1]
    # A stepped clock can put the reading after a gap before the one before it.
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    narrow = hi - lo < min_width
    mid = (lo + hi) / 2
    lo = np.where(narrow, mid - min_width / 2, lo)
    hi = np.where(narrow, mid + min_width / 2, hi)
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    # A span starts a new group where it begins after every earlier one has ended.
    reach = np.maximum.accumulate(hi)
    starts = np.flatnonzero(np.r_[True, lo[1:] > reach[:-1]])
    ends = np.r_[starts[1:], lo.size] - 1
    return list(zip(lo[starts].tolist(), reach[ends].tolist(), strict=True))


def _with_breaks(
    x: FloatArray, y: FloatArray, seq: npt.NDArray[np.int64]
) -> tuple[FloatArray, FloatArray]:
    """Insert NaN where seqs are still missing, so the line does not bridge unfilled gaps."""
    at = np.flatnonzero(np.diff(seq) > 1) + 1
    nan_y = np.full((at.size, *y.shape[1:]), np.nan)
    return np.insert(x, at, np.nan), np.insert(y, at, nan_y, axis=0)


def _plot_values(ax: Axes, series: SensorSeries, t0: float, fill: str) -> None:
    x = series.ts - t0
    values = series.values
    if values is None:
        # Records have no numeric value: draw each reading as a tick on one line.
        ax.plot(x, np.zeros_like(x), "|", ms=14, mew=1.2, color="C0", label="reading (record)")
        ax.set_yticks([])
        ax.set_ylabel("records")
        return
    if values.ndim == 1:
        lines = [("value", values)]
    elif values.shape[1] <= MAX_PLOTTED_COMPONENTS:
        lines = [(f"v[{k}]", values[:, k]) for k in range(values.shape[1])]
    else:
        lines = [("|v|", np.linalg.norm(values, axis=1))]
    observed, new = series.observed, series.filled
    marker = "o" if int(observed.sum()) <= MAX_MARKED_READINGS else ""
    # Past a few thousand, circles are a solid smear that takes seconds to draw; the line
    # through the filled points still shows them.
    filled_marker = int(new.sum()) <= MAX_MARKED_FILLED
    for k, (label, raw_y) in enumerate(lines):
        colour = f"C{k}"
        # A value beyond float range (another writer's) is a hole, not an axis to infinity.
        # matplotlib's margins and ticks overflow on values near float's limit too.
        y = np.where(np.abs(raw_y) <= MAX_DRAWN_VALUE, raw_y, np.nan)
        bx, by = _with_breaks(x, y, series.seq)
        ax.plot(bx, by, "-", lw=1.1, color=colour, label=label)
        if marker:
            ax.plot(x[observed], y[observed], marker, ms=2.5, color=colour, ls="none")
        if filled_marker:
            ax.plot(x[new], y[new], "o", ms=6, mfc="white", mec=colour, mew=1.4, ls="none")
    if new.any() and filled_marker:
        # One neutral legend entry for the filled markers of every component.
        ax.plot([], [], "o", ms=6, mfc="white", mec="0.3", mew=1.4, label=f"filled ({fill})")
    ax.set_ylabel("value" if values.ndim == 1 else "components")


def plot_report(
    path: Path,
    report: AnalyticsReport,
    series: Sequence[SensorSeries],
    *,
    fill: FillMethod,
    rate_window_s: float | None = None,
) -> None:
    """Draw ``report.png``: a panel per sensor, values and filled points, dropouts shaded,
    and the observed rate (``rate_window_s``: by default a fortieth of each stream, never
    fewer than ten readings).

    Raises:
        MissingExtra: matplotlib is not installed (the ``plot`` extra).
    """
    # The Figure API instead of pyplot: no global backend switch and no figure registry.
    # savefig picks the Agg canvas from the .png suffix.
    figure_module = require("matplotlib.figure", "plot", "report.png")
    panels = max(1, len(series))
    fig = figure_module.Figure(figsize=(12, 1.2 + 3.2 * panels), layout="constrained", dpi=100)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(f"forkwire sensor report ({_utc(report['generated_at'])} UTC)", fontsize=14)
    drawn = [s for s in series if s.ts.size]
    if not drawn:
        axes[0].text(0.5, 0.5, "no readings", ha="center", va="center", fontsize=14)
        axes[0].set_axis_off()
        fig.savefig(path)
        return

    t0 = min(float(s.ts.min()) for s in drawn)
    t_end = max(float(s.ts.max()) for s in drawn)
    min_shade = MIN_SHADE_FRACTION * max(t_end - t0, 1e-9)
    for ax, stream in zip(axes, series, strict=False):
        rep = report["sensors"][stream.sensor]
        for i, (lo, hi) in enumerate(dropout_spans(stream, t0, min_shade)):
            ax.axvspan(
                lo, hi, color="tab:red", alpha=0.18, lw=0, label="dropout" if i == 0 else None
            )
        _plot_values(ax, stream, t0, fill)

        rate_ax = ax.twinx()
        observed_ts = stream.ts[stream.observed]
        window = rate_window_s or _rate_window(observed_ts, rep["rate_hz"])
        if window is not None:
            centers, rates = windowed_rate(observed_ts, window)
            rate_ax.plot(
                centers - t0,
                rates,
                "--",
                lw=1.2,
                color="tab:gray",
                label=f"rate ({window:.3g} s window)",
            )
            if rates.size:
                rate_ax.set_ylim(0, float(rates.max()) * 1.15 or 1.0)
        # The data axes go above the twin so the rate line never hides readings.
        ax.set_zorder(rate_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        rate_ax.set_ylabel("rate [Hz]", color="tab:gray")
        rate_ax.tick_params(axis="y", colors="tab:gray")

        ax.set_title(
            f"{stream.sensor}: {rep['kind']}, {rep['count']:,} readings, "
            f"{rep['lost']:,} lost ({rep['loss_pct']:.1f}%), "
            f"{len(rep['dropouts']) + rep.get('dropouts_omitted', 0):,} dropouts, "
            f"{rep['filled']:,} filled",
            loc="left",
            fontsize=11,
        )
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        rate_handles, rate_labels = rate_ax.get_legend_handles_labels()
        # Outside the axes, right of the rate axis, so it never hides data.
        rate_ax.legend(
            handles + rate_handles,
            labels + rate_labels,
            loc="upper left",
            bbox_to_anchor=(1.07, 1.0),
            fontsize="small",
            frameon=False,
        )
    axes[-1].set_xlabel(f"time since {_utc(t0)} UTC [s]")
    fig.savefig(path)
