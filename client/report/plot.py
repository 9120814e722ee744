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
    if rate is None or span <= 0:
        return None
    return min(span, max(span / 40, 10 / rate))


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
    for k, (label, y) in enumerate(lines):
        colour = f"C{k}"
        bx, by = _with_breaks(x, y, series.seq)
        ax.plot(bx, by, "-", lw=1.1, color=colour, label=label)
        if marker:
            ax.plot(x[observed], y[observed], marker, ms=2.5, color=colour, ls="none")
        ax.plot(x[new], y[new], "o", ms=6, mfc="white", mec=colour, mew=1.4, ls="none")
    if new.any():
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
    when = dt.datetime.fromtimestamp(report["generated_at"], dt.UTC)
    fig.suptitle(f"forkwire sensor report ({when:%Y-%m-%d %H:%M:%S} UTC)", fontsize=14)
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
        for i, d in enumerate(rep["dropouts"]):
            lo, hi = d["start_ts"] - t0, d["end_ts"] - t0
            if hi - lo < min_shade:
                mid = (lo + hi) / 2
                lo, hi = mid - min_shade / 2, mid + min_shade / 2
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
            f"{rep['lost']:,} lost ({rep['loss_pct']:.1f}%), {len(rep['dropouts'])} dropouts, "
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
    axes[-1].set_xlabel(
        f"time since {dt.datetime.fromtimestamp(t0, dt.UTC):%Y-%m-%d %H:%M:%S} UTC [s]"
    )
    fig.savefig(path)
