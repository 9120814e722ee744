"""``report.png`` (and ``report-2.png``, ...): small multiples, a panel per sensor, pages
of a fixed size.

A panel shows a sensor's measured values (a solid line, broken wherever a seq is missing),
its filled values (dotted, hollow circles), its dropouts (shaded) and its observed rate
(dashed, right axis). A record sensor is drawn by its numeric fields, a line each.

matplotlib (the ``plot`` extra) is imported when a plot is drawn, not before.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from forkwire.client.extras import require
from forkwire.client.report.fetch import SensorSeries
from forkwire.protocol import AnalyticsReport, FillMethod

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FloatArray = npt.NDArray[np.float64]

#: A vector with more components than this is drawn as its norm: beyond a handful of
#: lines a panel is unreadable.
MAX_PLOTTED_COMPONENTS: Final = 6

#: Every page is this size, whatever the number of sensors: 23 sensors on one shared page
#: once made a 1200 x 7480 px picture nobody could read on a screen.
PAGE_SIZE_PX: Final = (1600, 1200)
PAGE_DPI: Final = 100
#: The grid of a full page. Twelve panels of about 500 x 260 px keep a minute of readings,
#: the title and the legend of a panel legible.
MAX_ROWS: Final = 4
MAX_COLUMNS: Final = 3
PANELS_PER_PAGE: Final = MAX_ROWS * MAX_COLUMNS

#: Sensors' extents "agree" when each starts and ends within this fraction of the whole
#: report's span of the others: they then share one time axis; otherwise each panel has
#: its own, or a short stream would be a sliver at one end of a long one's axis.
SHARED_AXIS_SLACK: Final = 0.05

#: Room for the page's title and key above, the time label below (fractions of the page),
#: and between panels for a two-line title, tick labels and the rate axis (inches).
PAGE_MARGINS: Final = {"left": 0.035, "right": 0.975, "top": 0.91, "bottom": 0.06}
ROW_GAP_IN: Final = 0.85
COLUMN_GAP_IN: Final = 0.7

#: Observed readings get a dot only when there are few enough to tell apart.
MAX_MARKED_READINGS: Final = 150
#: Values of larger magnitude are left out of the plot (ingest refuses them; another
#: writer may have stored them): the axis arithmetic of matplotlib overflows near 1.8e308.
MAX_DRAWN_VALUE: Final = 1e300

#: Filled points get a circle only when there are at most this many (the dotted line shows
#: them beyond).
MAX_MARKED_FILLED: Final = 300

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


@dataclass(frozen=True)
class Trace:
    """One line of a panel, as drawn: ``x``/``y`` with NaN where the line breaks.

    ``seq`` is each point's seq (NaN at a break), so a reader can check that no segment
    joins two points whose seqs are not adjacent. ``measured`` lines join observed
    readings only; the others (dotted) join filled points to their neighbours.
    """

    label: str
    measured: bool
    seq: FloatArray
    x: FloatArray
    y: FloatArray


@dataclass(frozen=True)
class Panel:
    """What one sensor's panel shows: its lines, its legend's labels, its shaded spans."""

    sensor: str
    traces: list[Trace]
    legend: list[str]
    dropout_spans: int
    #: The time the panel's x axis counts from.
    t0: float


@dataclass(frozen=True)
class Page:
    """One PNG written: its path, its size in pixels and its panels, in order."""

    path: Path
    size_px: tuple[int, int]
    panels: list[Panel] = field(default_factory=list)

    @property
    def sensors(self) -> list[str]:
        return [panel.sensor for panel in self.panels]


def page_paths(path: Path, pages: int) -> list[Path]:
    """``report.png``, ``report-2.png``, ... for ``pages`` pages (at least one)."""
    return [path] + [
        path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(2, max(pages, 1) + 1)
    ]


def stale_pages(path: Path, pages: int) -> list[Path]:
    """Pages of an earlier report with more sensors that this one does not overwrite."""
    pattern = re.compile(rf"{re.escape(path.stem)}-(\d+){re.escape(path.suffix)}")
    stale = []
    for candidate in path.parent.glob(f"{path.stem}-*{path.suffix}"):
        match = pattern.fullmatch(candidate.name)
        if match and int(match[1]) > pages:
            stale.append(candidate)
    return sorted(stale)


def _natural(name: str) -> list[tuple[int, str]]:
    """Sort key: sensor-2 before sensor-10, as a fleet numbers them."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name)]


def _gaps(rows: int, columns: int) -> dict[str, float]:
    """The page's margins, and the gaps between panels as matplotlib wants them: fractions
    of a panel's height and width, so the same inches whatever the grid."""
    height = PAGE_SIZE_PX[1] / PAGE_DPI * (PAGE_MARGINS["top"] - PAGE_MARGINS["bottom"])
    width = PAGE_SIZE_PX[0] / PAGE_DPI * (PAGE_MARGINS["right"] - PAGE_MARGINS["left"])
    panel_height = (height - ROW_GAP_IN * (rows - 1)) / rows
    panel_width = (width - COLUMN_GAP_IN * (columns - 1)) / columns
    return {
        **PAGE_MARGINS,
        "hspace": ROW_GAP_IN / panel_height,
        "wspace": COLUMN_GAP_IN / panel_width,
    }


def layout_pages(series: Sequence[SensorSeries]) -> list[list[SensorSeries]]:
    """The series of each page, ``PANELS_PER_PAGE`` at most, in natural order of sensor
    names (a sensor's producers next to each other); no pages without series."""
    ordered = sorted(series, key=lambda s: (_natural(s.sensor), s.producer))
    return [ordered[i : i + PANELS_PER_PAGE] for i in range(0, len(ordered), PANELS_PER_PAGE)]


def page_grid(sensors: int) -> tuple[int, int]:
    """``(rows, columns)`` of every page of a report on ``sensors`` sensors.

    Few sensors get fewer, larger panels (time series are wide: one column up to three);
    every page of a report has the same grid so panels compare across pages.
    """
    n = max(1, min(sensors, PANELS_PER_PAGE))
    columns = 1 if n <= 3 else 2 if n <= 8 else MAX_COLUMNS
    return math.ceil(n / columns), columns


def record_fields(raw: Sequence[Any]) -> dict[str, FloatArray]:
    """The numeric fields of records, each as a float array (NaN where a record lacks it).

    Nested objects and lists are flattened to ``a.b`` and ``a[0]``; booleans and strings
    are not numbers. At most ``MAX_PLOTTED_COMPONENTS`` fields, those present most often.
    """
    columns: dict[str, dict[int, float]] = {}
    for i, record in enumerate(raw):
        for name, number in _numeric_leaves(record, ""):
            columns.setdefault(name, {})[i] = number
    # Most often present first; ties keep the order of first appearance.
    ranked = sorted(columns, key=lambda name: -len(columns[name]))[:MAX_PLOTTED_COMPONENTS]
    out = {}
    for name in ranked:
        y = np.full(len(raw), np.nan)
        for i, number in columns[name].items():
            y[i] = number
        out[name] = y
    return out


def _numeric_leaves(value: Any, prefix: str, depth: int = 0) -> list[tuple[str, float]]:
    if isinstance(value, bool) or depth > 4:
        return []
    if isinstance(value, int | float):
        number = _finite(value)
        return [(prefix or "value", number)]
    if isinstance(value, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{prefix}[{k}]", v) for k, v in enumerate(value[:MAX_PLOTTED_COMPONENTS])]
    else:
        return []
    return [leaf for name, v in items for leaf in _numeric_leaves(v, name, depth + 1)]


def _finite(value: float) -> float:
    try:
        number = float(value)
    except OverflowError:
        return float("nan")
    return number if abs(number) <= MAX_DRAWN_VALUE else float("nan")


def value_lines(series: SensorSeries) -> list[tuple[str, FloatArray]]:
    """``(label, y)`` per line of a sensor's panel: the value, each vector component (or
    the norm of a long vector), or each numeric field of a record."""
    values = series.values
    if values is None:
        lines = list(record_fields(series.raw).items())
    elif values.ndim == 1:
        lines = [("value", values)]
    elif values.shape[1] <= MAX_PLOTTED_COMPONENTS:
        lines = [(f"v[{k}]", values[:, k]) for k in range(values.shape[1])]
    else:
        lines = [("|v|", np.linalg.norm(values, axis=1))]
    # A value beyond float range (another writer's) is a hole, not an axis to infinity.
    # matplotlib's margins and ticks overflow on values near float's limit too.
    return [
        (label, np.where(np.abs(y) <= MAX_DRAWN_VALUE, y, np.nan).astype(np.float64))
        for label, y in lines
    ]


def _broken(
    keep: npt.NDArray[np.bool_], joined: npt.NDArray[np.bool_], seq: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The indices of the kept points and, after each, whether the line breaks there: at a
    jump in seq, or where ``joined`` (per pair of neighbours) says not to join."""
    idx = np.flatnonzero(keep)
    if idx.size < 2:
        return idx, np.zeros(max(idx.size - 1, 0), dtype=np.bool_)
    adjacent = (np.diff(seq[idx]) == 1) & (np.diff(idx) == 1)
    return idx, ~(adjacent & joined[idx[:-1]])


def _trace(
    label: str,
    measured: bool,
    x: FloatArray,
    y: FloatArray,
    seq: npt.NDArray[np.int64],
    idx: npt.NDArray[np.int64],
    breaks: npt.NDArray[np.bool_],
) -> Trace:
    at = np.flatnonzero(breaks) + 1
    fx, fy, fs = x[idx], y[idx], seq[idx].astype(np.float64)
    return Trace(
        label=label,
        measured=measured,
        seq=np.insert(fs, at, np.nan),
        x=np.insert(fx, at, np.nan),
        y=np.insert(fy, at, np.nan),
    )


def traces(series: SensorSeries, t0: float) -> list[Trace]:
    """The lines of a sensor's panel, x relative to ``t0``: per value line, the measured
    one and, where points were filled, the filled one.

    A measured line joins two readings only when their seqs are adjacent and both were
    observed: a gap, filled or not, is a gap in it. A filled line joins each run of filled
    points to the observed readings on either side (when adjacent), and nothing else.
    """
    x = series.ts - t0
    seq = series.seq
    filled = series.filled
    n = seq.size
    out = []
    # Pair k (points k, k+1) joins on a filled line when either end is filled.
    filled_pair = filled[:-1] | filled[1:] if n else np.zeros(0, dtype=np.bool_)
    pair_all = np.ones(max(n - 1, 0), dtype=np.bool_)
    near_filled = filled.copy()
    if n > 1:
        near_filled[1:] |= filled[:-1]
        near_filled[:-1] |= filled[1:]
    for label, y in value_lines(series):
        finite = np.isfinite(y)
        idx, breaks = _broken(~filled & finite, pair_all, seq)
        out.append(_trace(label, True, x, y, seq, idx, breaks))
        if filled.any():
            pair = np.r_[filled_pair, False]
            idx, breaks = _broken(near_filled & finite, pair, seq)
            out.append(_trace(label, False, x, y, seq, idx, breaks))
    return out


def _draw_panel(
    ax: Axes,
    stream: SensorSeries,
    report: AnalyticsReport,
    t0: float,
    span: float,
    rate_window_s: float | None,
    name: str,
) -> Panel:
    rep = report["sensors"][stream.sensor]
    spans = dropout_spans(stream, t0, MIN_SHADE_FRACTION * max(span, 1e-9))
    for lo, hi in spans:
        ax.axvspan(lo, hi, color="tab:red", alpha=0.18, lw=0)
    drawn = traces(stream, t0)
    observed, new = stream.observed, stream.filled
    dots = int(observed.sum()) <= MAX_MARKED_READINGS
    circles = 0 < int(new.sum()) <= MAX_MARKED_FILLED
    labels = list(dict.fromkeys(t.label for t in drawn))
    for t in drawn:
        colour = f"C{labels.index(t.label)}"
        if t.measured:
            ax.plot(
                t.x, t.y, "-", lw=1.0, color=colour, label=t.label, marker="o" if dots else "", ms=2
            )
        else:
            ax.plot(t.x, t.y, ":", lw=1.2, color=colour)
            if circles:
                keep = np.isfinite(t.seq)
                is_new = np.isin(t.seq[keep], stream.seq[new])
                ax.plot(
                    t.x[keep][is_new],
                    t.y[keep][is_new],
                    "o",
                    ms=4,
                    mfc="white",
                    mec=colour,
                    mew=1.0,
                    ls="none",
                )
    if not drawn:
        # A record without a numeric field: a tick per reading shows when they came.
        x = stream.ts - t0
        ax.plot(x, np.zeros_like(x), "|", ms=10, color="C0")
        ax.set_yticks([])
        ax.text(
            0.5,
            0.9,
            "records without numeric fields",
            transform=ax.transAxes,
            ha="center",
            fontsize=7,
            color="0.4",
        )

    rate_ax = ax.twinx()
    observed_ts = stream.ts[observed]
    window = rate_window_s or _rate_window(observed_ts, rep["rate_hz"])
    if window is not None:
        centers, rates = windowed_rate(observed_ts, window)
        rate_ax.plot(centers - t0, rates, "--", lw=1.0, color="tab:gray")
        if rates.size:
            rate_ax.set_ylim(0, float(rates.max()) * 1.15 or 1.0)
    # The data axes go above the twin so the rate line never hides readings.
    ax.set_zorder(rate_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    rate_ax.tick_params(axis="y", colors="tab:gray", labelsize=7)
    ax.tick_params(labelsize=7)
    dropouts = len(rep["dropouts"]) + rep.get("dropouts_omitted", 0)
    ax.set_title(
        f"{name} ({rep['kind']})\n{rep['count']:,} readings, {rep['lost']:,} lost "
        f"({rep['loss_pct']:.1f}%), {dropouts:,} dropouts, {rep['filled']:,} filled",
        loc="left",
        fontsize=8,
    )
    ax.grid(True, alpha=0.3)
    legend: list[str] = []
    if len(labels) > 1:
        # Several lines need telling apart; one line's meaning is in the page's key.
        box = ax.legend(
            fontsize=6,
            loc="upper left",
            ncols=min(len(labels), 3),
            framealpha=0.7,
            handlelength=1.2,
            borderpad=0.2,
            labelspacing=0.2,
        )
        legend = [text.get_text() for text in box.get_texts()]
    return Panel(stream.sensor, drawn, legend, len(spans), t0)


def _extents_agree(drawn: Sequence[SensorSeries]) -> bool:
    starts = np.array([float(s.ts.min()) for s in drawn])
    ends = np.array([float(s.ts.max()) for s in drawn])
    span = float(ends.max() - starts.min())
    if not np.isfinite(span) or span <= 0:
        return True
    slack = SHARED_AXIS_SLACK * span
    return bool(starts.max() - starts.min() <= slack and ends.max() - ends.min() <= slack)


def _page_key(fig: Figure, fill: str) -> None:
    """The meaning of each style, once per page instead of in every panel."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Line2D([], [], color="C0", lw=1.0, label="measured (a missing seq breaks the line)"),
        Line2D(
            [],
            [],
            color="C0",
            lw=1.2,
            ls=":",
            marker="o",
            ms=4,
            mfc="white",
            label=f"filled ({fill})",
        ),
        Patch(color="tab:red", alpha=0.18, label="dropout"),
        Line2D([], [], color="tab:gray", lw=1.0, ls="--", label="rate [Hz], right axis"),
    ]
    fig.legend(
        handles=handles,
        loc="upper right",
        bbox_to_anchor=(0.99, 0.995),
        ncols=len(handles),
        fontsize=9,
        frameon=False,
    )


def plot_report(
    path: Path,
    report: AnalyticsReport,
    series: Sequence[SensorSeries],
    *,
    fill: FillMethod,
    rate_window_s: float | None = None,
) -> list[Page]:
    """Draw the report's pages: ``path`` (``report.png``), then ``report-2.png``, ... every
    one ``PAGE_SIZE_PX``, ``PANELS_PER_PAGE`` sensors at most each, in natural order of
    their names (sensor-2 before sensor-10).

    Sensors whose extents agree share one time axis, counted from the earliest reading;
    otherwise each panel counts from its own first reading. The rate is observed readings
    per second over ``rate_window_s`` (by default a fortieth of each stream, never fewer
    than ten readings). Returns what was drawn, page by page.

    Raises:
        MissingExtra: matplotlib is not installed (the ``plot`` extra).
    """
    # The Figure API instead of pyplot: no global backend switch and no figure registry.
    # savefig picks the Agg canvas from the .png suffix.
    figure_module = require("matplotlib.figure", "plot", "report.png")
    chunks = layout_pages(series)
    paths = page_paths(path, len(chunks))
    rows, columns = page_grid(len(series))
    size = (PAGE_SIZE_PX[0] / PAGE_DPI, PAGE_SIZE_PX[1] / PAGE_DPI)
    title = f"forkwire sensor report ({_utc(report['generated_at'])} UTC)"
    drawn = [s for s in series if s.ts.size]
    if not drawn:
        fig = figure_module.Figure(figsize=size, dpi=PAGE_DPI)
        fig.suptitle(title, fontsize=14)
        fig.text(0.5, 0.5, "no readings", ha="center", va="center", fontsize=14)
        fig.savefig(paths[0], dpi=PAGE_DPI)
        return [Page(paths[0], PAGE_SIZE_PX)]

    producers = Counter(s.sensor for s in series)
    shared = _extents_agree(drawn)
    t0 = min(float(s.ts.min()) for s in drawn)
    t_end = max(float(s.ts.max()) for s in drawn)
    pages = []
    for number, (page_path, chunk) in enumerate(zip(paths, chunks, strict=True), start=1):
        fig = figure_module.Figure(figsize=size, dpi=PAGE_DPI)
        # Fixed margins, not constrained layout: the page size is fixed, and the layout
        # solver took half of the drawing time.
        axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw=_gaps(rows, columns)).ravel()
        of = f", page {number} of {len(chunks)}" if len(chunks) > 1 else ""
        fig.suptitle(f"{title}{of}", fontsize=13, x=0.01, y=0.995, ha="left", va="top")
        _page_key(fig, fill)
        panels = []
        for ax, stream in zip(axes, chunk, strict=False):
            if not stream.ts.size:
                ax.text(
                    0.5,
                    0.5,
                    f"{stream.sensor}: no readings",
                    ha="center",
                    va="center",
                    fontsize=9,
                    transform=ax.transAxes,
                )
                ax.set_axis_off()
                panels.append(Panel(stream.sensor, [], [], 0, t0))
                continue
            if shared:
                own_t0, span = t0, t_end - t0
            else:
                own_t0 = float(stream.ts.min())
                span = float(stream.ts.max()) - own_t0
            name = stream.sensor
            if producers[stream.sensor] > 1:
                # The counts in the title are the sensor's, over all its producers.
                name += f" from {stream.producer[:8] or 'anonymous'}"
            panels.append(_draw_panel(ax, stream, report, own_t0, span, rate_window_s, name))
            if shared:
                ax.set_xlim(0, max(t_end - t0, 1e-9))
            else:
                ax.set_xlabel(f"s since {_utc(own_t0)} UTC", fontsize=7)
        for ax in axes[len(chunk) :]:
            ax.set_axis_off()
        if shared:
            fig.supxlabel(f"time since {_utc(t0)} UTC [s]", fontsize=10, y=0.005, va="bottom")
        fig.savefig(page_path, dpi=PAGE_DPI)
        pages.append(Page(page_path, PAGE_SIZE_PX, panels))
    return pages
