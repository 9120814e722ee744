"""The analytics report: built from stored rows, written as JSON, CSV and PNG, shown as a table.

This module does file I/O but no database access: callers hand it the rows they loaded,
so every storage backend, the ``report`` request and the CLI produce the same report.
matplotlib is imported inside :func:`write_report` only, so importing this module (and the
server) stays cheap.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypedDict

import numpy as np
from rich import box
from rich.table import Table

from forkwire.server.analytics import (
    FilledStream,
    FillMethod,
    FloatArray,
    IntArray,
    SensorReport,
    ValueKind,
    fill_gaps,
    sensor_report,
    split_values,
    windowed_rate,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CSV_COLUMNS: Final = ("sensor", "seq", "ts", "value", "filled")

#: A vector with more components than this is drawn as its norm: beyond a handful of
#: lines a panel is unreadable.
MAX_PLOTTED_COMPONENTS: Final = 6

#: Observed readings get a dot only when there are few enough to tell apart.
MAX_MARKED_READINGS: Final = 400

#: A dropout of one reading in an hour-long stream is narrower than a pixel; shading is
#: widened to this fraction of the time axis (about 4 px) so that every dropout shows.
MIN_SHADE_FRACTION: Final = 0.004


class ReadingRow(Protocol):
    """What the report needs of a stored reading (a model, a dataclass, a named tuple)."""

    @property
    def sensor(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> float: ...
    @property
    def value(self) -> Any: ...


class Report(TypedDict):
    """The whole report: when it was made and the analytics of each sensor by name."""

    generated_at: float
    sensors: dict[str, SensorReport]


class ReportPaths(NamedTuple):
    """The files :func:`write_report` wrote."""

    json: Path
    csv: Path
    png: Path


@dataclass(frozen=True)
class _Stream:
    sensor: str
    seq: IntArray
    ts: FloatArray
    #: The decoded JSON values in seq order, kept so the CSV writes them exactly as stored.
    raw: list[Any]
    kind: ValueKind
    values: FloatArray | None


def _streams(rows: Iterable[ReadingRow]) -> list[_Stream]:
    """Group rows by sensor, sorted by name and then by seq."""
    by_sensor: dict[str, dict[int, tuple[float, Any]]] = {}
    for row in rows:
        # (sensor, seq) is the idempotency key, so a repeated seq is the same reading
        # stored twice by a backend without a unique index; the last copy wins.
        by_sensor.setdefault(row.sensor, {})[int(row.seq)] = (float(row.ts), row.value)
    streams = []
    for name in sorted(by_sensor):
        items = sorted(by_sensor[name].items())
        seq = np.fromiter((s for s, _ in items), dtype=np.int64, count=len(items))
        ts = np.fromiter((t for _, (t, _) in items), dtype=np.float64, count=len(items))
        raw = [v for _, (_, v) in items]
        kind, values = split_values(raw)
        streams.append(_Stream(name, seq, ts, raw, kind, values))
    return streams


def _build(
    streams: Sequence[_Stream], fill: FillMethod, max_gap: int | None, now: float | None
) -> Report:
    return Report(
        generated_at=time.time() if now is None else float(now),
        sensors={
            s.sensor: sensor_report(s.seq, s.ts, s.values, fill=fill, max_gap=max_gap)
            for s in streams
        },
    )


def build_report(
    rows: Iterable[ReadingRow],
    *,
    fill: FillMethod = "linear",
    max_gap: int | None = None,
    now: float | None = None,
) -> Report:
    """Return the analytics of every sensor in ``rows``, ready for ``json.dumps``.

    Args:
        rows: stored readings in any order.
        fill: the fill method whose ``filled`` count each sensor reports.
        max_gap: gaps longer than this many seqs count as unfillable.
        now: the ``generated_at`` timestamp (UNIX seconds); the current time by default.
    """
    return _build(_streams(rows), fill, max_gap, now)


def write_report(
    rows: Iterable[ReadingRow],
    out_dir: str | Path,
    *,
    fill: FillMethod = "linear",
    max_gap: int | None = None,
    now: float | None = None,
    rate_window_s: float | None = None,
) -> ReportPaths:
    """Write ``report.json``, ``filled.csv`` and ``report.png`` into ``out_dir``.

    ``filled.csv`` holds every observed reading plus the readings ``fill`` adds, flagged
    ``filled=1``. ``rate_window_s`` is the window of the plotted rate; by default about
    a fortieth of each stream and never fewer than ten readings.

    Raises:
        ValueError: from :func:`server.analytics.fill_gaps`, when filling would add more
            rows than it allows; pass ``max_gap``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    streams = _streams(rows)
    report = _build(streams, fill, max_gap, now)
    fills = [fill_gaps(s.seq, s.ts, s.values, fill, max_gap) for s in streams]
    paths = ReportPaths(out / "report.json", out / "filled.csv", out / "report.png")

    # allow_nan=False: the report is read by other languages, where NaN is not JSON.
    paths.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    _write_csv(paths.csv, streams, fills)
    _plot(paths.png, streams, fills, report, fill, rate_window_s)
    return paths


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _write_csv(path: Path, streams: Sequence[_Stream], fills: Sequence[FilledStream]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for stream, filled in zip(streams, fills, strict=True):
            observed = iter(stream.raw)
            values = filled.values
            for i, (seq, ts, is_filled) in enumerate(
                zip(filled.seq.tolist(), filled.ts.tolist(), filled.filled.tolist(), strict=True)
            ):
                if not is_filled:
                    # Observed rows keep the stored value, so an int stays an int.
                    value: Any = next(observed)
                else:
                    assert values is not None  # records are never filled
                    value = values[i].tolist()
                text = str(value) if stream.kind == "scalar" else _json_text(value)
                writer.writerow((stream.sensor, seq, repr(ts), text, int(is_filled)))


def _rate_window(ts: FloatArray, rate: float | None) -> float | None:
    span = float(np.ptp(ts)) if ts.size else 0.0
    if rate is None or span <= 0:
        return None
    return min(span, max(span / 40, 10 / rate))


def _with_breaks(x: FloatArray, y: FloatArray, seq: IntArray) -> tuple[FloatArray, FloatArray]:
    """Insert NaN where seqs are still missing, so the line does not bridge unfilled gaps."""
    at = np.flatnonzero(np.diff(seq) > 1) + 1
    nan_y = np.full((at.size, *y.shape[1:]), np.nan)
    return np.insert(x, at, np.nan), np.insert(y, at, nan_y, axis=0)


def _plot_values(ax: Axes, stream: _Stream, filled: FilledStream, t0: float, fill: str) -> None:
    x = filled.ts - t0
    if filled.values is None:
        # Records have no numeric value: draw each reading as a tick on one line.
        ax.plot(x, np.zeros_like(x), "|", ms=14, mew=1.2, color="C0", label="reading (record)")
        ax.set_yticks([])
        ax.set_ylabel("records")
        return
    values = filled.values
    if values.ndim == 1:
        series = [("value", values)]
    elif values.shape[1] <= MAX_PLOTTED_COMPONENTS:
        series = [(f"v[{k}]", values[:, k]) for k in range(values.shape[1])]
    else:
        series = [("|v|", np.linalg.norm(values, axis=1))]
    observed, new = ~filled.filled, filled.filled
    marker = "o" if stream.seq.size <= MAX_MARKED_READINGS else ""
    for k, (label, y) in enumerate(series):
        colour = f"C{k}"
        bx, by = _with_breaks(x, y, filled.seq)
        ax.plot(bx, by, "-", lw=1.1, color=colour, label=label)
        if marker:
            ax.plot(x[observed], y[observed], marker, ms=2.5, color=colour, ls="none")
        ax.plot(
            x[new],
            y[new],
            "o",
            ms=6,
            mfc="white",
            mec=colour,
            mew=1.4,
            ls="none",
        )
    if new.any():
        # One neutral legend entry for the filled markers of every component.
        ax.plot([], [], "o", ms=6, mfc="white", mec="0.3", mew=1.4, label=f"filled ({fill})")
    ax.set_ylabel("value" if values.ndim == 1 else "components")


def _plot(
    path: Path,
    streams: Sequence[_Stream],
    fills: Sequence[FilledStream],
    report: Report,
    fill: FillMethod,
    rate_window_s: float | None,
) -> None:
    # The Figure API instead of pyplot: no global backend switch and no figure registry
    # to leak into, so a long-running server can render reports from any thread.
    # savefig picks the Agg canvas from the .png suffix.
    from matplotlib.figure import Figure

    panels = max(1, len(streams))
    fig = Figure(figsize=(12, 1.2 + 3.2 * panels), layout="constrained", dpi=100)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    when = dt.datetime.fromtimestamp(report["generated_at"], dt.UTC)
    fig.suptitle(f"forkwire sensor report ({when:%Y-%m-%d %H:%M:%S} UTC)", fontsize=14)
    if not streams:
        axes[0].text(0.5, 0.5, "no readings", ha="center", va="center", fontsize=14)
        axes[0].set_axis_off()
        fig.savefig(path)
        return

    t0 = min(float(s.ts.min()) for s in streams if s.ts.size)
    t_end = max(float(s.ts.max()) for s in streams if s.ts.size)
    min_shade = MIN_SHADE_FRACTION * max(t_end - t0, 1e-9)
    for ax, stream, filled in zip(axes, streams, fills, strict=True):
        rep = report["sensors"][stream.sensor]
        for i, d in enumerate(rep["dropouts"]):
            lo, hi = d["start_ts"] - t0, d["end_ts"] - t0
            if hi - lo < min_shade:
                mid = (lo + hi) / 2
                lo, hi = mid - min_shade / 2, mid + min_shade / 2
            ax.axvspan(
                lo, hi, color="tab:red", alpha=0.18, lw=0, label="dropout" if i == 0 else None
            )
        _plot_values(ax, stream, filled, t0, fill)

        rate_ax = ax.twinx()
        window = rate_window_s or _rate_window(stream.ts, rep["rate_hz"])
        if window is not None:
            centers, rates = windowed_rate(stream.ts, window)
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


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render_table(report: Mapping[str, Any]) -> Table:
    """Return a rich table with one row per sensor of a report (built or decoded from JSON)."""
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
            f"{len(rep['dropouts']):,}",
            _fmt(st and st["mean"], "#.4g"),
            _fmt(st and st["p95"], "#.4g"),
            style="red" if rep["lost"] else None,
        )
    return table
