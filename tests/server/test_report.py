"""The answers to report and series: analytics and pages of points, computed on the server."""

from __future__ import annotations

import json
import random
from typing import Any, NamedTuple

import numpy as np
import pytest

from forkwire.server.analytics import fill_gaps, sensor_report, split_values
from forkwire.server.report import MAX_PAGE_FILL, build_report, build_series

T0 = 1_700_000_000.0
NOW = T0 + 1_000.0


class Row(NamedTuple):
    sensor: str
    seq: int
    ts: float
    value: Any
    received_at: float = T0 + 5_000.0
    producer: str = ""


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
    assert build_report([], now=NOW) == {"generated_at": NOW, "sensors": {}, "sensors_omitted": 0}


def test_producers_are_judged_each_on_its_own_seqs() -> None:
    """A restarted fleet (a new producer from seq 0) is no gap and no duplicate: loss and
    dropouts count per producer, the rest over all of them."""
    first = [Row("s", q, T0 + q, float(q), producer="p1") for q in range(10) if q != 5]
    again = [Row("s", q, T0 + 20 + q, float(q), producer="p2") for q in range(5)]
    report = build_report(first + again, now=NOW)
    s = report["sensors"]["s"]
    assert (s["count"], s["expected"], s["lost"]) == (14, 15, 1)
    assert [(p["producer"], p["count"], p["lost"]) for p in s["producers"]] == [
        ("p1", 9, 1),
        ("p2", 5, 0),
    ]
    assert [(d["producer"], d["first_seq"]) for d in s["dropouts"]] == [("p1", 5)]
    assert (s["first_ts"], s["last_ts"]) == (T0, T0 + 24)
    assert s["stats"] is not None
    assert s["stats"]["max"] == 9.0


def pages(rows: list[Row], sensor: str, **options: Any) -> list[Any]:
    """Every page of one sensor's series, asked as a client asks: after = the last next."""
    stored = sorted((r for r in rows if r.sensor == sensor), key=lambda r: r.seq)
    limit = options.pop("limit")
    answers = []
    after = None
    while True:
        window = [r for r in stored if after is None or r.seq >= after][: limit + 2]
        page = build_series(sensor, "", window, after=after, limit=limit, **options)
        answers.append(page)
        if page.next is None:
            return answers
        after = page.next


@pytest.mark.parametrize("sensor", ["temp", "accel", "door"])
@pytest.mark.parametrize("limit", [1, 4, 7, 1000])
def test_series_pages_join_into_the_whole_stream_filled(
    rows: list[Row], sensor: str, limit: int
) -> None:
    """However it is paged, a series is the whole stream with its gaps filled, once each."""
    answers = pages(rows, sensor, limit=limit, fill="linear", max_gap=4)
    seq = [s for page in answers for s in page.seq]
    ts = [t for page in answers for t in page.ts]
    filled = [f for page in answers for f in page.filled]
    stored = sorted((r for r in rows if r.sensor == sensor), key=lambda r: r.seq)
    kind, values = split_values([r.value for r in stored])
    whole = fill_gaps(
        np.array([r.seq for r in stored]),
        np.array([r.ts for r in stored]),
        values if kind != "record" else None,
        "linear",
        4,
    )
    assert seq == whole.seq.tolist()
    assert ts == pytest.approx(whole.ts.tolist())
    assert filled == whole.filled.tolist()
    observed = [
        v for page in answers for v, f in zip(page.value, page.filled, strict=True) if not f
    ]
    assert observed == [r.value for r in stored]  # stored values as they are: ints stay ints
    received = [x for page in answers for x in page.received_at]
    assert received == [None if f else T0 + 5_000.0 for f in filled]
    assert all(len(page.seq) - sum(page.filled) <= limit for page in answers)


def test_series_fills_linearly_between_neighbours(rows: list[Row]) -> None:
    """A filled scalar lies on the line, against time, between the readings around it."""
    (page,) = pages(rows, "temp", limit=100, fill="linear", max_gap=4)
    points = dict(zip(page.seq, zip(page.ts, page.value, page.filled, strict=True), strict=True))
    assert {s for s, (_, _, f) in points.items() if f} == {5, 20, 21}
    ts, value, _ = points[5]
    assert ts == pytest.approx(T0 + 2.5)
    assert value == pytest.approx((24 + 26) / 2)
    assert points[0][1] == 20
    assert type(points[0][1]) is int


def test_series_of_records_is_never_filled(rows: list[Row]) -> None:
    """Records have no numbers to fill with."""
    answers = pages(rows, "door", limit=5, fill="linear", max_gap=None)
    assert not any(f for page in answers for f in page.filled)


def test_series_without_fill_is_the_stored_readings(rows: list[Row]) -> None:
    """fill="none" gives the observed readings only, in seq order."""
    answers = pages(rows, "accel", limit=9, fill="none", max_gap=None)
    seqs = [s for page in answers for s in page.seq]
    assert seqs == sorted(r.seq for r in rows if r.sensor == "accel")


def test_series_of_an_empty_sensor_is_one_empty_page() -> None:
    """No stored readings: one page, nothing in it, no next."""
    page = build_series("x", "", [], after=None, limit=10, fill="linear", max_gap=None)
    assert (page.seq, page.next) == ([], None)


def test_series_refuses_a_page_of_too_many_filled_points() -> None:
    """A gap wider than a page may fill is refused with a hint, never materialized."""
    rows = [Row("a", 0, T0, 1.0), Row("a", MAX_PAGE_FILL + 2, T0 + 1, 2.0)]
    with pytest.raises(ValueError, match="max_gap"):
        build_series("a", "", rows, after=None, limit=10, fill="linear", max_gap=None)
    page = build_series("a", "", rows, after=None, limit=10, fill="linear", max_gap=100)
    assert page.seq == [0, MAX_PAGE_FILL + 2]
