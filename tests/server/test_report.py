"""Tests of report building, the JSON/CSV/PNG files and the terminal table."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from rich.console import Console

from forkwire.server.analytics import sensor_report
from forkwire.server.report import build_report, render_table, write_report

T0 = 1_700_000_000.0
NOW = T0 + 1_000.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]


class Row(NamedTuple):
    sensor: str
    seq: int
    ts: float
    value: Any


#: Seqs each sensor loses: temp has a 1, a 2 and a 5 reading gap, accel a 3 and a 10, door 2.
MISSING = {
    "temp": {5, 20, 21, 30, 31, 32, 33, 34},
    "accel": {10, 11, 12, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59},
    "door": {7, 8},
}
N = {"temp": 60, "accel": 80, "door": 20}


def make_rows() -> list[Row]:
    """Three sensors (scalar ints, vectors, records) with planted gaps, shuffled."""
    rows = []
    for s in range(N["temp"]):
        if s not in MISSING["temp"]:
            rows.append(Row("temp", s, T0 + 0.5 * s, 20 + s % 7))
    for s in range(N["accel"]):
        if s not in MISSING["accel"]:
            t = T0 + 0.2 * s
            rows.append(Row("accel", 1000 + s, t, [float(s), 2.0 * s, -1.0]))
    for s in range(N["door"]):
        if s not in MISSING["door"]:
            rows.append(Row("door", s, T0 + 3.0 * s, {"open": s % 2 == 0, "who": "x"}))
    random.Random(5).shuffle(rows)
    return rows


@pytest.fixture
def rows() -> list[Row]:
    """The shuffled three-sensor stream."""
    return make_rows()


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of filled.csv as dicts."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_build_report_is_json_and_matches_sensor_report(rows: list[Row]) -> None:
    """build_report survives json.dumps unchanged and equals sensor_report per sensor."""
    report = build_report(rows, fill="linear", max_gap=4, now=NOW)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["generated_at"] == NOW
    assert list(report["sensors"]) == ["accel", "door", "temp"]
    temp = [r for r in sorted(rows, key=lambda r: r.seq) if r.sensor == "temp"]
    seq = np.array([r.seq for r in temp])
    ts = np.array([r.ts for r in temp])
    values = np.array([r.value for r in temp], dtype=float)
    assert report["sensors"]["temp"] == sensor_report(seq, ts, values, fill="linear", max_gap=4)
    for name, missing in MISSING.items():
        got = report["sensors"][name]
        assert (got["count"], got["lost"]) == (N[name] - len(missing), len(missing))
    assert report["sensors"]["accel"]["kind"] == "vector"
    assert report["sensors"]["door"]["stats"] is None


def test_build_report_defaults_now_to_current_time(rows: list[Row]) -> None:
    """Without now, generated_at is the current UNIX time."""
    import time

    before = time.time()
    report = build_report(rows)
    assert before <= report["generated_at"] <= time.time()


def test_build_report_keeps_one_copy_of_a_repeated_seq() -> None:
    """A reading stored twice counts once: (sensor, seq) is its identity."""
    rows = [Row("a", 0, T0, 1.0), Row("a", 1, T0 + 1, 2.0), Row("a", 1, T0 + 1, 2.0)]
    assert build_report(rows, now=NOW)["sensors"]["a"]["count"] == 2


def test_build_report_of_nothing() -> None:
    """No rows give a report with no sensors."""
    assert build_report([], now=NOW) == {"generated_at": NOW, "sensors": {}}


def test_write_report_writes_all_three_files(rows: list[Row], tmp_path: Path) -> None:
    """report.json, filled.csv and report.png appear, and the JSON is the built report."""
    out = tmp_path / "nested" / "out"
    paths = write_report(iter(rows), out, fill="linear", max_gap=4, now=NOW)
    assert paths == (out / "report.json", out / "filled.csv", out / "report.png")
    assert all(p.is_file() for p in paths)
    expected = build_report(rows, fill="linear", max_gap=4, now=NOW)
    assert json.loads(paths.json.read_text()) == expected


def test_filled_csv_has_observed_and_filled_rows(rows: list[Row], tmp_path: Path) -> None:
    """filled.csv holds each observed reading (filled=0) plus each fillable gap seq (1)."""
    paths = write_report(rows, tmp_path, fill="linear", max_gap=4, now=NOW)
    table = read_csv(paths.csv)
    assert list(table[0]) == ["sensor", "seq", "ts", "value", "filled"]
    by_sensor: dict[str, dict[int, dict[str, str]]] = {}
    for r in table:
        by_sensor.setdefault(r["sensor"], {})[int(r["seq"])] = r
    assert len(table) == sum(len(v) for v in by_sensor.values())  # no duplicate rows

    # temp: gaps of 1 and 2 are filled, the 5-reading gap exceeds max_gap=4.
    temp = by_sensor["temp"]
    assert {s for s, r in temp.items() if r["filled"] == "1"} == {5, 20, 21}
    assert set(temp) == set(range(60)) - set(range(30, 35))
    assert temp[0]["value"] == "20"  # a stored int stays an int
    assert float(temp[5]["value"]) == pytest.approx((24 + 26) / 2)
    assert float(temp[5]["ts"]) == pytest.approx(T0 + 2.5)

    # accel: the 3-reading gap is filled element-wise, the 10-reading gap is not.
    accel = by_sensor["accel"]
    assert {s for s, r in accel.items() if r["filled"] == "1"} == {1010, 1011, 1012}
    assert len(accel) == 80 - 10
    assert json.loads(accel[1011]["value"]) == pytest.approx([11.0, 22.0, -1.0])
    assert json.loads(accel[1000]["value"]) == [0.0, 0.0, -1.0]

    # door: records are written as JSON and never filled.
    door = by_sensor["door"]
    assert all(r["filled"] == "0" for r in door.values())
    assert set(door) == set(range(20)) - {7, 8}
    assert json.loads(door[2]["value"]) == {"open": True, "who": "x"}


def test_filled_csv_without_fill_has_observed_rows_only(rows: list[Row], tmp_path: Path) -> None:
    """With fill="none" the CSV is exactly the observed readings."""
    paths = write_report(rows, tmp_path, fill="none", max_gap=None, now=NOW)
    table = read_csv(paths.csv)
    assert len(table) == len(rows)
    assert all(r["filled"] == "0" for r in table)


def test_png_is_a_nonempty_png(rows: list[Row], tmp_path: Path) -> None:
    """report.png is a real PNG file with content."""
    paths = write_report(rows, tmp_path, fill="previous", max_gap=None, now=NOW)
    data = paths.png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000


def test_write_report_with_no_rows(tmp_path: Path) -> None:
    """An empty store still gets all three files, with a placeholder plot."""
    paths = write_report([], tmp_path, fill="linear", max_gap=None, now=NOW)
    assert json.loads(paths.json.read_text()) == {"generated_at": NOW, "sensors": {}}
    assert read_csv(paths.csv) == []
    assert paths.png.read_bytes().startswith(PNG_SIGNATURE)


def test_render_table_has_one_row_per_sensor(rows: list[Row]) -> None:
    """The table lists every sensor with its loss and statistics, records showing a dash."""
    report = build_report(rows, now=NOW)
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
    # A report decoded from JSON (e.g. a report_result frame) renders the same way.
    assert render_table(json.loads(json.dumps(report))).row_count == 3


def test_importing_report_does_not_load_matplotlib() -> None:
    """matplotlib is imported only when a plot is drawn, so the server starts fast."""
    code = "import sys, forkwire.server.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
