"""Tests of the pure stream analytics: loss, rate, dropouts, gap filling, statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkwire.server.analytics import (
    MAX_FILL_ROWS,
    FloatArray,
    dropouts,
    fill_gaps,
    rate_hz,
    sensor_report,
    split_values,
    stats,
    summarize,
)

T0 = 1_700_000_000.0


def planted(missing: set[int], n: int = 51, start: int = 0) -> np.ndarray:
    """Seqs ``start .. start + n - 1`` without ``missing``."""
    return np.array([s for s in range(start, start + n) if s not in missing], dtype=np.int64)


def irregular_ts(seq: np.ndarray, seed: int = 1) -> FloatArray:
    """Timestamps at uneven intervals (0.05 s to 1.5 s per seq step), increasing."""
    rng = np.random.default_rng(seed)
    steps = rng.uniform(0.05, 1.5, size=int(seq[-1]) + 1)
    ts: FloatArray = T0 + np.cumsum(steps)[seq]
    return ts


def test_dropouts_exact_ranges() -> None:
    """Seqs 0..50 without 10-12 and 40 give exactly those two runs with neighbouring ts."""
    seq = planted({10, 11, 12, 40})
    ts = T0 + 0.2 * seq
    assert dropouts(seq, ts) == [
        {
            "producer": "",
            "first_seq": 10,
            "last_seq": 12,
            "count": 3,
            "start_ts": ts[9],
            "end_ts": ts[10],
        },
        {
            "producer": "",
            "first_seq": 40,
            "last_seq": 40,
            "count": 1,
            "start_ts": ts[36],
            "end_ts": ts[37],
        },
    ]
    assert dropouts(seq, ts)[0]["start_ts"] == T0 + 0.2 * 9
    assert dropouts(seq, ts)[0]["end_ts"] == T0 + 0.2 * 13


@pytest.mark.parametrize("seq", [[], [7], [3, 4, 5, 6]])
def test_dropouts_none_without_gaps(seq: list[int]) -> None:
    """An empty, single-reading or gap-free stream has no dropouts."""
    assert dropouts(seq, np.arange(len(seq), dtype=float)) == []


def test_dropouts_plain_python_types() -> None:
    """Dropout fields are int and float, not numpy scalars, so json.dumps takes them."""
    (d,) = dropouts([0, 5], [1.0, 2.0])
    assert all(type(d[k]) is int for k in ("first_seq", "last_seq", "count"))
    assert all(type(d[k]) is float for k in ("start_ts", "end_ts"))


def test_summarize_counts_loss() -> None:
    """Expected spans first..last seq; lost and loss_pct follow from the count."""
    seq = planted({110, 111, 112, 140}, start=100)
    ts = T0 + 0.2 * (seq - 100)
    assert summarize(seq, ts) == {
        "count": 47,
        "first_ts": T0,
        "last_ts": T0 + 0.2 * 50,
        "first_seq": 100,
        "last_seq": 150,
        "expected": 51,
        "lost": 4,
        "loss_pct": pytest.approx(100 * 4 / 51),
    }


def test_summarize_empty() -> None:
    """An empty stream has nothing expected, nothing lost and no extent."""
    s = summarize([], [])
    assert (s["count"], s["expected"], s["lost"], s["loss_pct"]) == (0, 0, 0, 0.0)
    assert s["first_ts"] is None
    assert s["last_seq"] is None


def test_summarize_huge_seqs_do_not_overflow() -> None:
    """Seqs near 2**63 count with Python ints, not wrapped int64."""
    s = summarize([0, 2**63 - 1], [0.0, 1.0])
    assert s["expected"] == 2**63
    assert s["lost"] == 2**63 - 2


def test_rejects_unsorted_or_duplicate_seq() -> None:
    """Neighbour-based analytics refuse a seq that is not strictly increasing."""
    with pytest.raises(ValueError, match="strictly increasing"):
        dropouts([0, 2, 1], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        summarize([0, 1, 1], [0.0, 1.0, 2.0])


def test_rate_regular_5hz() -> None:
    """A regular 5 Hz stream reports 5 readings per second."""
    ts = T0 + np.arange(300) / 5
    assert rate_hz(ts) == pytest.approx(5.0, rel=1e-9)


@pytest.mark.parametrize("ts", [[], [T0], [T0, T0, T0]])
def test_rate_undefined_is_none(ts: list[float]) -> None:
    """Fewer than two readings, or no elapsed time, has no rate (None, not 0.0)."""
    assert rate_hz(ts) is None


def test_linear_fill_is_exact_on_linear_signal_with_irregular_ts() -> None:
    """Linear fill interpolates value against time: value = 3*ts + 1 holds on filled rows."""
    seq = planted({3, 10, 11, 12, 25, 26, 40})
    ts = irregular_ts(seq)
    result = fill_gaps(seq, ts, 3 * ts + 1, "linear")
    assert result.values is not None
    np.testing.assert_array_equal(result.seq, np.arange(51))
    assert result.filled.sum() == 7
    np.testing.assert_array_equal(np.flatnonzero(result.filled), [3, 10, 11, 12, 25, 26, 40])
    np.testing.assert_allclose(result.values, 3 * result.ts + 1, rtol=1e-14, atol=0)
    # The observed rows come back untouched.
    np.testing.assert_array_equal(result.ts[~result.filled], ts)
    np.testing.assert_array_equal(result.values[~result.filled], 3 * ts + 1)


def test_filled_ts_is_linear_by_seq_between_neighbours() -> None:
    """A filled seq's ts sits on the line between the surrounding readings' ts, by seq."""
    result = fill_gaps([0, 4], [10.0, 18.0], [0.0, 1.0], "previous")
    np.testing.assert_array_equal(result.seq, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(result.ts, [10.0, 12.0, 14.0, 16.0, 18.0])


def test_linear_fill_survives_clock_step_elsewhere() -> None:
    """A backwards clock step in one place does not corrupt the fill of another gap."""
    seq = np.array([0, 1, 2, 3, 5, 6])
    ts = np.array([100.0, 101.0, 50.0, 51.0, 53.0, 54.0])  # clock stepped back at seq 2
    result = fill_gaps(seq, ts, 3 * ts + 1, "linear")
    assert result.values is not None
    (i,) = np.flatnonzero(result.filled)
    assert result.seq[i] == 4
    assert result.ts[i] == pytest.approx(52.0)
    assert result.values[i] == pytest.approx(3 * 52.0 + 1)


def test_linear_fill_with_equal_neighbour_ts_falls_back_to_seq() -> None:
    """When both neighbours share a timestamp, the value is interpolated by seq, not NaN."""
    result = fill_gaps([0, 2], [5.0, 5.0], [0.0, 10.0], "linear")
    assert result.values is not None
    np.testing.assert_allclose(result.values, np.array([0.0, 5.0, 10.0]))


def test_previous_fill_repeats_last_observed() -> None:
    """Previous fill copies the value of the reading before each gap."""
    seq = planted({2, 3, 7}, n=10)
    values = seq * 10.0
    result = fill_gaps(seq, T0 + seq, values, "previous")
    np.testing.assert_array_equal(result.seq, np.arange(10))
    np.testing.assert_array_equal(result.values, [0, 10, 10, 10, 40, 50, 60, 60, 80, 90])
    np.testing.assert_array_equal(result.filled, np.isin(np.arange(10), [2, 3, 7]))


def test_max_gap_leaves_long_gaps_unfilled() -> None:
    """Gaps longer than max_gap seqs stay missing; shorter ones are filled."""
    seq = planted({5, 20, 21, 22, 23, 24, 40, 41})
    result = fill_gaps(seq, T0 + seq, seq * 1.0, "linear", max_gap=2)
    np.testing.assert_array_equal(result.seq[result.filled], [5, 40, 41])
    assert not np.isin(np.arange(20, 25), result.seq).any()
    assert fill_gaps(seq, T0 + seq, seq * 1.0, "linear", max_gap=0).filled.sum() == 0
    with pytest.raises(ValueError, match="max_gap"):
        fill_gaps(seq, T0 + seq, seq * 1.0, "linear", max_gap=-1)


def test_fill_never_invents_leading_or_trailing_readings() -> None:
    """Filled seqs lie strictly between the first and the last received seq."""
    seq = planted({0, 1, 2, 7, 48, 49, 50}, start=0)
    result = fill_gaps(seq, T0 + seq, seq * 1.0, "linear")
    assert result.seq[0] == 3
    assert result.seq[-1] == 47
    np.testing.assert_array_equal(result.seq[result.filled], [7])


def test_fill_none_returns_observed_only() -> None:
    """Method "none" adds nothing."""
    seq = planted({3, 4})
    result = fill_gaps(seq, T0 + seq, seq * 1.0, "none")
    np.testing.assert_array_equal(result.seq, seq)
    assert not result.filled.any()


def test_vector_fill_is_elementwise() -> None:
    """Each component of a vector is interpolated against time on its own."""
    seq = planted({4, 5, 6, 30})
    ts = irregular_ts(seq, seed=2)
    slopes = np.array([3.0, -0.5, 0.0])
    values = ts[:, np.newaxis] * slopes + np.array([1.0, 2.0, 7.0])
    linear = fill_gaps(seq, ts, values, "linear")
    assert linear.values is not None
    assert linear.values.shape == (51, 3)
    expected = linear.ts[:, np.newaxis] * slopes + np.array([1.0, 2.0, 7.0])
    np.testing.assert_allclose(linear.values, expected, rtol=1e-14)
    previous = fill_gaps(seq, ts, values, "previous")
    assert previous.values is not None
    np.testing.assert_array_equal(previous.values[4:7], np.repeat(values[3:4], 3, axis=0))


def test_records_are_never_filled() -> None:
    """values=None marks a record stream, which comes back unfilled for every method."""
    seq = planted({10, 11})
    for method in ("linear", "previous", "none"):
        result = fill_gaps(seq, T0 + seq, None, method)
        np.testing.assert_array_equal(result.seq, seq)
        assert result.values is None
        assert not result.filled.any()


def test_fill_refuses_absurd_gap() -> None:
    """A corrupt seq far ahead fails loudly instead of allocating billions of rows."""
    with pytest.raises(ValueError, match="max_gap"):
        fill_gaps([0, MAX_FILL_ROWS + 2], [0.0, 1.0], [0.0, 1.0])
    assert fill_gaps([0, 10**15], [0.0, 1.0], [0.0, 1.0], max_gap=100).seq.size == 2


def test_fill_rejects_unknown_method() -> None:
    """A misspelled method is a caller error, not a silent no-op."""
    with pytest.raises(ValueError, match="unknown fill method"):
        fill_gaps([0, 2], [0.0, 1.0], [0.0, 1.0], "cubic")  # type: ignore[arg-type]


def test_stats_match_numpy() -> None:
    """Stats equal numpy's min/max/mean/population std/percentiles, as Python floats."""
    values = np.random.default_rng(3).normal(10.0, 2.0, size=1001)
    result = stats(values)
    assert result is not None
    assert dict(result) == {
        "min": pytest.approx(np.min(values)),
        "max": pytest.approx(np.max(values)),
        "mean": pytest.approx(np.mean(values)),
        "std": pytest.approx(np.std(values, ddof=0)),
        "p50": pytest.approx(np.percentile(values, 50)),
        "p95": pytest.approx(np.percentile(values, 95)),
        "p99": pytest.approx(np.percentile(values, 99)),
    }
    assert all(type(v) is float for v in result.values())


def test_stats_of_vectors_use_euclidean_norm() -> None:
    """A vector stream is described by the norm of each reading."""
    result = stats(np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]))
    assert result is not None
    assert (result["min"], result["max"], result["p50"]) == (1.0, 10.0, 5.0)


@pytest.mark.parametrize("values", [None, [], np.empty((0, 3))])
def test_stats_empty_or_record_is_none(values: object) -> None:
    """No numeric readings means no statistics."""
    assert stats(values) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "kind", "shape"),
    [
        ([1, 2.5, -3], "scalar", (3,)),
        ([], "scalar", (0,)),
        ([[1, 2], [3.5, 4]], "vector", (2, 2)),
        ([{"open": True}, {"open": False}], "record", None),
        ([1, [1.0, 2.0]], "record", None),
        ([[1.0, 2.0], [1.0]], "record", None),
        ([True, False], "record", None),
        ([[]], "record", None),
    ],
)
def test_split_values_classifies(raw: list[object], kind: str, shape: tuple[int] | None) -> None:
    """Numbers are scalars, equal-length number lists vectors, and anything else records."""
    got_kind, array = split_values(raw)
    assert got_kind == kind
    if shape is None:
        assert array is None
    else:
        assert array is not None
        assert array.shape == shape
        assert array.dtype == np.float64


def test_sensor_report_is_json_ready() -> None:
    """sensor_report gives plain types that json.dumps accepts, with the planted loss."""
    seq = planted({10, 11, 12, 40})
    ts = T0 + 0.2 * seq
    report = sensor_report(seq, ts, 3 * ts + 1, fill="linear", max_gap=2)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["kind"] == "scalar"
    assert (report["count"], report["expected"], report["lost"]) == (47, 51, 4)
    assert report["filled"] == 1  # only the one-reading gap is within max_gap=2
    assert report["rate_hz"] == pytest.approx(46 / 10.0)
    assert [d["first_seq"] for d in report["dropouts"]] == [10, 40]
    assert report["stats"] is not None
    assert report["stats"]["mean"] == pytest.approx(float(np.mean(3 * ts + 1)))


def test_sensor_report_of_records_has_no_stats() -> None:
    """A record stream reports loss and rate but no statistics and no fill."""
    report = sensor_report([0, 1, 3], [0.0, 1.0, 3.0], None)
    assert report["kind"] == "record"
    assert report["stats"] is None
    assert report["filled"] == 0
    assert report["lost"] == 1


@given(st.sets(st.integers(min_value=0, max_value=2_000), min_size=1, max_size=300))
def test_count_plus_dropouts_is_expected(seqs: set[int]) -> None:
    """For any sorted unique seqs, count + sum of dropout counts == expected."""
    seq = np.array(sorted(seqs), dtype=np.int64)
    ts = seq * 0.5
    summary = summarize(seq, ts)
    runs = dropouts(seq, ts)
    assert summary["count"] + sum(d["count"] for d in runs) == summary["expected"]
    assert summary["lost"] == sum(d["count"] for d in runs)
    filled = fill_gaps(seq, ts, seq.astype(float), "linear")
    np.testing.assert_array_equal(filled.seq, np.arange(seq[0], seq[-1] + 1))
