"""Drawing a report on the client: filled.csv, report.json, report.png and the table."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from forkwire.client.report import (
    SensorSeries,
    render_table,
    windowed_rate,
    write_report,
)
from forkwire.protocol import AnalyticsReport

T0 = 1_700_000_000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def planted(missing: set[int], n: int = 51, start: int = 0) -> np.ndarray:
    """Seqs ``start .. start + n - 1`` without ``missing``."""
    return np.array([s for s in range(start, start + n) if s not in missing], dtype=np.int64)


def series(sensor: str, kind: Any, points: list[tuple[int, float, Any, bool]]) -> SensorSeries:
    """A series as a client holds it after fetching it."""
    return SensorSeries(
        sensor=sensor,
        kind=kind,
        seq=np.array([p[0] for p in points], dtype=np.int64),
        ts=np.array([p[1] for p in points], dtype=np.float64),
        raw=[p[2] for p in points],
        filled=np.array([p[3] for p in points], dtype=np.bool_),
        received_at=[None if p[3] else T0 + 9 for p in points],
    )


def sensor_entry(kind: str, count: int, dropouts: list[dict[str, Any]]) -> dict[str, Any]:
    """A report entry, as the server sends one."""
    stats = (
        None
        if kind == "record"
        else dict.fromkeys(("min", "max", "mean", "std", "p50", "p95", "p99"), 1.5)
    )
    return {
        "kind": kind,
        "count": count,
        "expected": count + 1,
        "lost": 1,
        "loss_pct": 100 / (count + 1),
        "filled": 1,
        "rate_hz": 2.0,
        "first_seq": 0,
        "last_seq": count,
        "first_ts": T0,
        "last_ts": T0 + count,
        "dropouts": dropouts,
        "stats": stats,
    }


@pytest.fixture
def drawn() -> tuple[AnalyticsReport, list[SensorSeries]]:
    """Three sensors, one of each kind; temp and accel with one filled point each."""
    gap = [{"first_seq": 1, "last_seq": 1, "count": 1, "start_ts": T0, "end_ts": T0 + 2}]
    temp = series(
        "temp", "scalar", [(0, T0, 20, False), (1, T0 + 1, 21.5, True), (2, T0 + 2, 23, False)]
    )
    accel = series(
        "accel",
        "vector",
        [(0, T0, [0.0, 1.0], False), (1, T0 + 1, [0.5, 1.5], True), (2, T0 + 2, [1.0, 2.0], False)],
    )
    door = series(
        "door", "record", [(0, T0, {"open": True}, False), (2, T0 + 2, {"open": False}, False)]
    )
    report: AnalyticsReport = {
        "generated_at": T0 + 10,
        "sensors": {
            "accel": sensor_entry("vector", 2, gap),
            "door": sensor_entry("record", 2, gap),
            "temp": sensor_entry("scalar", 2, gap),
        },
    }  # type: ignore[typeddict-item]
    return report, [accel, door, temp]


def test_write_report_writes_all_three_files(
    drawn: tuple[AnalyticsReport, list[SensorSeries]], tmp_path: Path
) -> None:
    """report.json is the report, filled.csv every point, report.png a real picture."""
    report, streams = drawn
    outcome = write_report(report, streams, tmp_path / "nested", "linear")
    out = tmp_path / "nested"
    assert outcome.files == [out / "report.json", out / "filled.csv", out / "report.png"]
    assert json.loads((out / "report.json").read_text()) == report
    data = (out / "report.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def test_filled_csv_writes_each_kind_as_it_is(
    drawn: tuple[AnalyticsReport, list[SensorSeries]], tmp_path: Path
) -> None:
    """A stored int stays an int, vectors and records are JSON, filled points are flagged."""
    report, streams = drawn
    write_report(report, streams, tmp_path, "linear")
    with (tmp_path / "filled.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["sensor", "seq", "ts", "value", "filled"]
    by_key = {(r["sensor"], int(r["seq"])): r for r in rows}
    assert len(rows) == 8
    assert by_key[("temp", 0)]["value"] == "20"
    assert (by_key[("temp", 1)]["value"], by_key[("temp", 1)]["filled"]) == ("21.5", "1")
    assert json.loads(by_key[("accel", 1)]["value"]) == [0.5, 1.5]
    assert json.loads(by_key[("door", 2)]["value"]) == {"open": False}
    assert float(by_key[("temp", 2)]["ts"]) == T0 + 2


def test_write_report_with_no_sensors(tmp_path: Path) -> None:
    """An empty store still gets all three files, with a placeholder plot."""
    write_report({"generated_at": T0, "sensors": {}}, [], tmp_path, "linear")
    assert json.loads((tmp_path / "report.json").read_text()) == {"generated_at": T0, "sensors": {}}
    assert (tmp_path / "filled.csv").read_text().splitlines() == ["sensor,seq,ts,value,filled"]
    assert (tmp_path / "report.png").read_bytes().startswith(PNG_SIGNATURE)


def test_render_table_has_one_row_per_sensor(
    drawn: tuple[AnalyticsReport, list[SensorSeries]],
) -> None:
    """The table lists every sensor with its loss and statistics, records showing a dash."""
    report, _ = drawn
    table = render_table(report)
    assert table.row_count == 3
    assert [str(c.header) for c in table.columns] == [
        "sensor",
        "count",
        "expected",
        "lost",
        "loss %",
        "rate Hz",
        "dropouts",
        "mean",
        "p95",
    ]
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "door" in text
    assert "—" in text  # the record stream has no mean


def test_importing_the_report_package_does_not_load_matplotlib() -> None:
    """matplotlib is imported only when a plot is drawn."""
    code = "import sys, forkwire.client.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_windowed_rate_regular_5hz() -> None:
    """Every full 2 s window of a 5 Hz stream holds 10 readings, give or take an edge."""
    ts = T0 + np.arange(300) / 5
    centers, rates = windowed_rate(ts, 2.0)
    assert centers.size > 100
    assert centers[0] == pytest.approx(T0 + 1.0)
    assert centers[-1] <= ts[-1] - 1.0
    np.testing.assert_allclose(rates, 5.0, atol=0.5)
    assert rates.mean() == pytest.approx(5.0, abs=0.05)


def test_windowed_rate_dips_in_dropout() -> None:
    """Windows inside a 20 s outage count no readings."""
    seq = planted(set(range(100, 200)), n=300)
    ts = T0 + seq / 5
    centers, rates = windowed_rate(ts, 2.0)
    inside = (centers > T0 + 100 / 5 + 1.5) & (centers < T0 + 199 / 5 - 1.5)
    assert inside.any()
    assert np.all(rates[inside] == 0.0)


def test_windowed_rate_shorter_than_window_is_empty() -> None:
    """A stream shorter than one window has no full window to report."""
    centers, rates = windowed_rate(T0 + np.arange(5) / 5, 10.0)
    assert centers.size == 0
    assert rates.size == 0


def test_windowed_rate_rejects_bad_window() -> None:
    """A zero or negative window is a caller error."""
    with pytest.raises(ValueError, match="positive"):
        windowed_rate([0.0, 1.0], 0.0)
