"""report.png at any sensor count: fixed-size pages of small multiples, gaps as breaks,
filled points apart from measured ones, records by their numeric fields."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.client.report import (
    PANELS_PER_PAGE,
    SensorSeries,
    report_from_server,
    write_report,
)
from forkwire.client.report.plot import (
    PAGE_SIZE_PX,
    Trace,
    layout_pages,
    page_grid,
    record_fields,
    traces,
)
from forkwire.protocol import Ack, AnalyticsReport, Reading, ReadingsMsg

T0 = 1_700_000_000.0
KINDS = ("scalar", "vector", "record")
#: Seqs 0..39 with 10-12 missing and left unfilled, and 25 missing and filled.
UNFILLED = {10, 11, 12}
FILLED = 25


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def value(kind: str, seq: int) -> Any:
    x = math.sin(seq / 5)
    if kind == "scalar":
        return x
    if kind == "vector":
        return [x, 2 * x, -x]
    return {"cpu": 50 + 10 * x, "mem": {"used": 30 + seq}, "host": "a", "ok": True}


def stream(sensor: str, kind: str, start: float = T0, step: float = 0.5) -> SensorSeries:
    """40 seqs, 10-12 missing (unfilled) and 25 filled (records are never filled)."""
    points = [s for s in range(40) if s not in UNFILLED]
    if kind == "record":
        points.remove(FILLED)
    return SensorSeries(
        sensor=sensor,
        kind=kind,  # type: ignore[arg-type]
        seq=np.array(points, dtype=np.int64),
        ts=np.array([start + s * step for s in points], dtype=np.float64),
        raw=[value(kind, s) for s in points],
        filled=np.array([s == FILLED for s in points], dtype=np.bool_),
        received_at=[None if s == FILLED else start for s in points],
    )


def fleet(n: int) -> tuple[AnalyticsReport, list[SensorSeries]]:
    """``n`` sensors named as a fleet names them, kinds in turn, and their report."""
    series = [stream(f"sensor-{i}", KINDS[i % 3]) for i in range(n)]
    report: AnalyticsReport = {
        "generated_at": T0 + 100,
        "sensors": {s.sensor: entry(s) for s in series},
    }  # type: ignore[typeddict-item]
    return report, series


def entry(s: SensorSeries) -> dict[str, Any]:
    return {
        "kind": s.kind,
        "count": int(s.observed.sum()),
        "expected": 40,
        "lost": 4,
        "loss_pct": 10.0,
        "filled": int(s.filled.sum()),
        "rate_hz": 2.0,
        "first_seq": 0,
        "last_seq": 39,
        "first_ts": float(s.ts[0]),
        "last_ts": float(s.ts[-1]),
        "producers": [],
        "dropouts": [],
        "stats": None,
    }


@pytest.mark.parametrize("n", [5, 23, 100])
def test_pages_hold_every_sensor_once(n: int) -> None:
    """At most a page's worth per page, every sensor on exactly one page, in fleet order."""
    _, series = fleet(n)
    pages = layout_pages(series)
    assert len(pages) == math.ceil(n / PANELS_PER_PAGE)
    assert all(0 < len(page) <= PANELS_PER_PAGE for page in pages)
    names = [s.sensor for page in pages for s in page]
    assert names == [f"sensor-{i}" for i in range(n)]  # sensor-2 before sensor-10
    rows, columns = page_grid(n)
    assert rows * columns >= min(n, PANELS_PER_PAGE)
    assert rows * columns <= PANELS_PER_PAGE


@pytest.mark.parametrize("n", [5, 23])
def test_every_page_has_the_fixed_size(n: int, tmp_path: Path) -> None:
    """report.png, report-2.png, ...: all PAGE_SIZE_PX, each sensor drawn on one page."""
    report, series = fleet(n)
    outcome = write_report(report, series, tmp_path, "linear")
    pages = [tmp_path / "report.png"] + [
        tmp_path / f"report-{k}.png" for k in range(2, math.ceil(n / PANELS_PER_PAGE) + 1)
    ]
    assert outcome.files == [tmp_path / "report.json", tmp_path / "filled.csv", *pages]
    assert sorted(tmp_path.glob("report*.png")) == sorted(pages)
    for page in pages:
        assert png_size(page) == PAGE_SIZE_PX


def test_fewer_sensors_remove_pages_of_an_earlier_report(tmp_path: Path) -> None:
    """A report-2.png left by a larger report would read as part of the new one."""
    report, series = fleet(PANELS_PER_PAGE + 1)
    write_report(report, series, tmp_path, "linear")
    assert (tmp_path / "report-2.png").exists()
    (tmp_path / "report-x.png").write_bytes(b"not ours")
    report, series = fleet(2)
    write_report(report, series, tmp_path, "linear")
    assert sorted(p.name for p in tmp_path.glob("report*.png")) == ["report-x.png", "report.png"]


def test_plot_returns_panels_and_draws_record_fields(tmp_path: Path) -> None:
    """A record's numeric fields (nested ones too) are lines with a legend; strings and
    booleans are not numbers. Vector components get a legend; a scalar needs none."""
    from forkwire.client.report import plot_report

    report, series = fleet(3)
    pages = plot_report(tmp_path / "report.png", report, series, fill="linear")
    assert [page.sensors for page in pages] == [["sensor-0", "sensor-1", "sensor-2"]]
    panels = {panel.sensor: panel for panel in pages[0].panels}
    assert panels["sensor-2"].legend == ["cpu", "mem.used"]
    measured = [t.label for t in panels["sensor-2"].traces if t.measured]
    assert measured == ["cpu", "mem.used"]
    assert panels["sensor-1"].legend == ["v[0]", "v[1]", "v[2]"]
    assert panels["sensor-0"].legend == []
    assert pages[0].size_px == PAGE_SIZE_PX
    assert png_size(tmp_path / "report.png") == PAGE_SIZE_PX


def test_record_fields_are_most_present_first_and_nan_where_missing() -> None:
    """Fields ranked by how many records hold them; a missing or overflowing one is NaN."""
    raw = [{"a": 1, "b": 2}, {"b": 3, "c": [4, 5]}, {"b": 1e400, "s": "x"}]
    fields = record_fields(raw)
    assert list(fields) == ["b", "a", "c[0]", "c[1]"]
    np.testing.assert_array_equal(fields["a"], [1.0, np.nan, np.nan])
    np.testing.assert_array_equal(fields["b"], [2.0, 3.0, np.nan])  # inf is a hole


def segments(trace: Trace) -> list[tuple[float, float]]:
    """The (seq, seq) pairs a line joins: consecutive points without a NaN between."""
    s = trace.seq
    return [
        (s[i], s[i + 1]) for i in range(s.size - 1) if np.isfinite(s[i]) and np.isfinite(s[i + 1])
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_gaps_are_breaks_and_filled_points_apart(kind: str) -> None:
    """No segment spans a missing seq; measured lines never touch a filled point, filled
    (dotted) lines join only a filled point to its neighbours."""
    s = stream("s", kind)
    drawn = traces(s, T0)
    filled_seqs = set(s.seq[s.filled].tolist())
    assert drawn, "every kind draws a line"
    for trace in drawn:
        assert trace.x.shape == trace.y.shape == trace.seq.shape
        # NaN breaks are where x, y and seq are all NaN together.
        np.testing.assert_array_equal(np.isnan(trace.seq), np.isnan(trace.x))
        for a, b in segments(trace):
            assert b - a == 1, (trace.label, a, b)
            if trace.measured:
                assert a not in filled_seqs
                assert b not in filled_seqs
            else:
                assert a in filled_seqs or b in filled_seqs
    measured = [t for t in drawn if t.measured]
    # The unfilled gap 10-12 breaks every measured line: 9 and 13 are never joined.
    for trace in measured:
        assert (9.0, 13.0) not in segments(trace)
        assert np.isnan(trace.y).any()
    dotted = [t for t in drawn if not t.measured]
    if kind == "record":
        assert dotted == []
    else:
        assert all(segments(t) == [(24.0, 25.0), (25.0, 26.0)] for t in dotted)


def test_time_axes_shared_when_extents_agree_else_per_sensor(tmp_path: Path) -> None:
    """Streams over the same minute share an axis; a stream an hour later gets its own."""
    from forkwire.client.report import plot_report

    report, series = fleet(2)
    pages = plot_report(tmp_path / "same.png", report, series, fill="linear")
    assert {panel.t0 for panel in pages[0].panels} == {T0}
    late = stream("sensor-1", "vector", start=T0 + 3600)
    report["sensors"]["sensor-1"] = entry(late)  # type: ignore[typeddict-item]
    pages = plot_report(tmp_path / "apart.png", report, [series[0], late], fill="linear")
    assert [panel.t0 for panel in pages[0].panels] == [T0, T0 + 3600]
    # Each panel's line starts at its own zero, not an hour along a shared axis.
    assert [float(np.nanmin(panel.traces[0].x)) for panel in pages[0].panels] == [0.0, 0.0]


async def test_report_draws_readings_sent_by_a_producer(tmp_path: Path) -> None:
    """A fleet's readings carry its producer id: the series are fetched per producer, so
    they are drawn (and written to filled.csv), not left out as the anonymous one's."""
    server = await LocalServer.start("--db", f"sqlite:///{tmp_path / 'store.sqlite'}", "--no-udp")
    try:
        connection = await Connection.open("127.0.0.1", server.port)
        async with connection:
            for producer in ("fleet-a", "fleet-b"):
                items = [
                    Reading(sensor="temp", seq=seq, ts=T0 + seq, value=float(seq))
                    for seq in range(6)
                    if seq != 3
                ]
                reply = await connection.request(ReadingsMsg(producer=producer, items=items))
                assert isinstance(reply, Ack)
            await connection.goodbye()
        outcome = await report_from_server("127.0.0.1", server.port, tmp_path / "out")
    finally:
        await server.stop()
    rows = (tmp_path / "out" / "filled.csv").read_text().splitlines()[1:]
    assert len(rows) == 12  # 5 readings and 1 filled point per producer
    assert png_size(outcome.files[-1]) == PAGE_SIZE_PX
