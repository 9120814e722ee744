"""The analytics survive any stored data: extreme values and timestamps, huge lists."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from forkwire.client.report.fetch import SensorSeries
from forkwire.client.report.plot import dropout_spans
from forkwire.protocol import MAX_REPORT_DROPOUTS, MAX_REPORT_PRODUCERS, MAX_REPORT_SENSORS
from forkwire.server.analytics import (
    TS_BOUND,
    Stream,
    clamp_ts,
    rate_hz,
    split_values,
    stats,
    streams_report,
)
from forkwire.server.report import build_report


@pytest.mark.parametrize(
    "values",
    [[1.7e308, 1.7e308], [-1.7e308, 1.7e308, 0.0], [1e300] * 1000, [1e-300, 1.7e308]],
)
def test_statistics_of_values_near_float_limit_are_finite(values: list[float]) -> None:
    result = stats(np.asarray(values))
    assert result is not None
    assert all(math.isfinite(v) for v in result.values())
    assert result["min"] * (1 - 1e-12) <= result["mean"] <= result["max"] * (1 + 1e-12)


def test_statistics_of_ordinary_values_are_unchanged_by_the_scaling() -> None:
    v = np.asarray([1.0, 2.0, 3.0, 10.0])
    result = stats(v)
    assert result is not None
    assert result["mean"] == float(v.mean())
    assert result["std"] == float(v.std())


def test_ints_beyond_float_range_are_skipped_not_fatal() -> None:
    kind, values = split_values([10**400, 5, -(10**400)])
    assert kind == "scalar"
    assert values is not None
    report = streams_report([Stream("", [0, 1, 2], [1.0, 2.0, 3.0], values)])
    assert report["values_skipped"] == 2
    assert report["stats"] is not None
    assert report["stats"]["mean"] == 5.0


def test_extreme_timestamps_are_clamped_and_counted() -> None:
    t, moved = clamp_ts([-1.7e308, float("nan"), 5.0, float("inf")])
    assert moved == 3
    assert t.tolist() == [-TS_BOUND, 0.0, 5.0, TS_BOUND]
    report = streams_report([Stream("", [0, 1, 3], [-1.7e308, 1.7e308, 1.7e308], [1, 2, 3])])
    assert report["ts_clamped"] == 3
    assert report["rate_hz"] is not None
    assert report["rate_hz"] > 0
    assert rate_hz([float("inf"), 1.0]) is None


def test_dropouts_and_producers_are_capped_with_a_count_of_the_rest() -> None:
    streams = [
        Stream(f"p{k:03d}", np.arange(0, 20, 2), np.arange(10.0), None)
        for k in range(MAX_REPORT_PRODUCERS + 5)
    ]
    report = streams_report(streams)
    total = 9 * len(streams)
    assert len(report["dropouts"]) == MAX_REPORT_DROPOUTS
    assert report["dropouts_omitted"] == total - MAX_REPORT_DROPOUTS
    assert len(report["producers"]) == MAX_REPORT_PRODUCERS
    assert report["producers_omitted"] == 5
    assert report["lost"] == total  # counts cover every producer


def test_dropout_spans_are_merged_into_few() -> None:
    n = 100_000
    seq = np.arange(0, 2 * n, 2, dtype=np.int64)
    series = SensorSeries(
        sensor="s",
        kind="scalar",
        seq=seq,
        ts=np.arange(n, dtype=np.float64),
        raw=[0.0] * n,
        filled=np.zeros(n, dtype=np.bool_),
        received_at=[None] * n,
    )
    spans = dropout_spans(series, 0.0, min_width=n * 0.004)
    # One span: from the first gap's middle (0.5) to the last's (n - 1.5), widened by 200.
    assert spans == [(-199.5, n - 1.5 + 200.0)]
    few = SensorSeries(
        "s",
        "scalar",
        np.asarray([0, 5, 6, 9]),
        np.asarray([0.0, 1.0, 50.0, 99.0]),
        [0.0] * 4,
        np.zeros(4, np.bool_),
        [None] * 4,
    )
    assert dropout_spans(few, 0.0, 1.0) == [(0.0, 1.0), (50.0, 99.0)]


def test_a_report_describes_at_most_the_first_sensors_and_counts_the_rest() -> None:
    @dataclass(frozen=True)
    class Row:
        sensor: str
        producer: str
        seq: int
        ts: float
        value: object

    rows = [Row(f"s{k:05d}", "", 0, 1.0, 1.0) for k in range(MAX_REPORT_SENSORS + 5)]
    report = build_report(reversed(rows), now=0.0)
    assert len(report["sensors"]) == MAX_REPORT_SENSORS
    assert report["sensors_omitted"] == 5
    assert min(report["sensors"]) == "s00000"
