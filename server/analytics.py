"""Analytics over one sensor's stored stream: loss, rate, dropouts, gap filling, statistics.

Pure functions over numpy arrays; no I/O and no plotting, so the server, the CLI and the
tests share exactly the same numbers.

A stream is given as parallel arrays sorted by ``seq`` (strictly increasing):

* ``seq`` -- int64 sequence numbers. A sensor numbers its readings without gaps from its
  first seq, so a missing seq is a lost reading.
* ``ts`` -- float64 UNIX seconds, the sensor's own timestamps. They are usually increasing
  but nothing here relies on it, because sensor clocks step.
* ``values`` -- float64 ``(N,)`` for a scalar stream, float64 ``(N, K)`` for a vector
  stream, and ``None`` for a record stream (JSON objects have no numeric meaning, so they
  are counted and checked for loss but never filled and have no statistics).

:func:`split_values` turns the decoded JSON values of one sensor into that form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple, TypeAlias, TypedDict

import numpy as np
import numpy.typing as npt

from forkwire.protocol.messages import MAX_TS
from forkwire.protocol.report import (
    FILL_METHODS,
    MAX_REPORT_DROPOUTS,
    MAX_REPORT_PRODUCERS,
    Dropout,
    FillMethod,
    ProducerSummary,
    SensorReport,
    ValueKind,
    ValueStats,
)

IntArray: TypeAlias = npt.NDArray[np.int64]
FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

#: Upper bound on the rows :func:`fill_gaps` materializes. One corrupt seq (say 10**12
#: instead of 1,000) would otherwise ask for a terabyte of filler; failing loudly with a
#: hint to set ``max_gap`` beats exhausting the server's memory. Ten million rows of a
#: scalar stream is about 250 MB of arrays.
MAX_FILL_ROWS: Final = 10_000_000

#: Timestamps the analytics take as they are; beyond, a ts is counted at the bound (and
#: the report says how many were). Ingest refuses anything outside ``[0, MAX_TS]``, but
#: another writer or an older server may have stored +-1.7e308 or an infinity, whose
#: spans would be inf and whose rates 0 or NaN.
TS_BOUND: Final = MAX_TS

#: Values beyond this magnitude are scaled down (by a power of two, so exactly) before
#: sums and squares: ``std`` squares them, and 1e155 squared is already inf.
_SCALE_ABOVE: Final = 2.0**500


class Summary(TypedDict):
    """Counts and extent of a stream; ``first_*``/``last_*`` are ``None`` when it is empty."""

    count: int
    first_ts: float | None
    last_ts: float | None
    first_seq: int | None
    last_seq: int | None
    expected: int
    lost: int
    loss_pct: float


class FilledStream(NamedTuple):
    """A stream with filled rows merged in, sorted by seq; ``filled`` marks the new rows."""

    seq: IntArray
    ts: FloatArray
    #: ``None`` for a record stream, which is never filled.
    values: FloatArray | None
    filled: BoolArray


def _as_stream(seq: npt.ArrayLike, ts: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    s = np.asarray(seq, dtype=np.int64)
    t = np.asarray(ts, dtype=np.float64)
    if s.ndim != 1 or t.shape != s.shape:
        raise ValueError(f"seq and ts must be 1-D of equal length, got {s.shape} and {t.shape}")
    # Everything below (dropouts, fill) reads neighbours off np.diff, which is only
    # meaningful on a strictly increasing seq; storage guarantees uniqueness per sensor.
    if s.size > 1 and not bool(np.all(s[1:] > s[:-1])):
        raise ValueError("seq must be strictly increasing (sorted, no duplicates)")
    return s, t


def _as_values(values: npt.ArrayLike | None, n: int) -> FloatArray | None:
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[0] != n:
        raise ValueError(f"values must be (N,) or (N, K) with N={n}, got shape {v.shape}")
    return v


def summarize(seq: npt.ArrayLike, ts: npt.ArrayLike) -> Summary:
    """Count the readings of a stream and how many are missing between its first and last seq.

    Loss before the first received seq or after the last one cannot be seen: the stream
    is judged on ``[first_seq, last_seq]`` only.
    """
    s, t = _as_stream(seq, ts)
    if s.size == 0:
        return Summary(
            count=0,
            first_ts=None,
            last_ts=None,
            first_seq=None,
            last_seq=None,
            expected=0,
            lost=0,
            loss_pct=0.0,
        )
    # Python ints: last - first + 1 overflows int64 for seqs near 2**63.
    first_seq, last_seq = int(s[0]), int(s[-1])
    expected = last_seq - first_seq + 1
    lost = expected - int(s.size)
    return Summary(
        count=int(s.size),
        first_ts=float(t[0]),
        last_ts=float(t[-1]),
        first_seq=first_seq,
        last_seq=last_seq,
        expected=expected,
        lost=lost,
        loss_pct=100.0 * lost / expected,
    )


def rate_hz(ts: npt.ArrayLike) -> float | None:
    """Return the observed readings per second, ``(count - 1) / span``.

    ``None`` when the rate is undefined (fewer than two readings, or all at one instant):
    ``0.0`` would claim the sensor is silent, and ``None`` becomes JSON ``null``. The span
    is ``max(ts) - min(ts)``, which equals ``last_ts - first_ts`` on a monotonic clock and
    stays positive when the clock stepped back. Lost readings lower the rate; that is
    the point.
    """
    t = np.asarray(ts, dtype=np.float64)
    t = t[np.isfinite(t)]
    if t.size < 2:
        return None
    with np.errstate(over="ignore"):
        span = float(t.max() - t.min())
    if not 0.0 < span < float("inf"):
        return None
    return (t.size - 1) / span


def dropouts(
    seq: npt.ArrayLike, ts: npt.ArrayLike, producer: str = "", *, limit: int | None = None
) -> list[Dropout]:
    """List the runs of missing seqs between the first and the last reading, in seq order:
    every one, or the first ``limit``."""
    s, t = _as_stream(seq, ts)
    if s.size < 2:
        return []
    at = np.flatnonzero(np.diff(s) > 1)[:limit]
    # The Python loop runs once per listed dropout, not per reading; .tolist() gives plain ints
    # and floats so the dicts go straight into json.dumps.
    return [
        Dropout(
            producer=producer,
            first_seq=a + 1,
            last_seq=b - 1,
            count=b - a - 1,
            start_ts=ta,
            end_ts=tb,
        )
        for a, b, ta, tb in zip(
            s[at].tolist(), s[at + 1].tolist(), t[at].tolist(), t[at + 1].tolist(), strict=True
        )
    ]


def _fillable_gaps(s: IntArray, max_gap: int | None) -> tuple[IntArray, IntArray]:
    """Return the indices before each fillable gap and the number of seqs missing there."""
    if max_gap is not None and max_gap < 0:
        raise ValueError(f"max_gap must be >= 0 or None, got {max_gap}")
    if s.size < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    missing = np.diff(s) - 1
    keep = missing > 0 if max_gap is None else (missing > 0) & (missing <= max_gap)
    at = np.flatnonzero(keep).astype(np.int64)
    return at, missing[at]


def fill_gaps(
    seq: npt.ArrayLike,
    ts: npt.ArrayLike,
    values: npt.ArrayLike | None,
    method: FillMethod = "linear",
    max_gap: int | None = None,
    *,
    limit: int = MAX_FILL_ROWS,
) -> FilledStream:
    """Return the stream with its interior gaps filled according to ``method``.

    Only seqs between two received readings are filled: nothing is invented before the
    first or after the last reading, because there is nothing to interpolate towards.
    A filled reading's ts lies on the straight line, by seq, between the ts of the
    readings around the gap. Its value is:

    * ``"linear"`` -- interpolated against time between those two readings, element-wise
      for vectors;
    * ``"previous"`` -- the value of the reading before the gap;
    * ``"none"`` -- not filled at all.

    Args:
        values: ``(N,)`` or ``(N, K)`` numbers, or ``None`` for a record stream, which is
            returned unfilled whatever ``method`` says.
        max_gap: gaps of more than this many missing seqs stay unfilled (``None``: no
            limit). Guessing across a long outage would be fiction.
        limit: refuse to materialize more filled rows than this.

    Raises:
        ValueError: bad shapes, unsorted seq, unknown method, negative ``max_gap``, or the
            fill would exceed ``limit`` rows.
    """
    if method not in FILL_METHODS:
        raise ValueError(f"unknown fill method {method!r}, expected one of {FILL_METHODS}")
    s, t = _as_stream(seq, ts)
    v = _as_values(values, s.size)
    at, missing = _fillable_gaps(s, max_gap)
    if v is None or method == "none" or at.size == 0:
        return FilledStream(s, t, v, np.zeros(s.size, dtype=np.bool_))
    total = int(missing.sum())
    if total > limit:
        raise ValueError(
            f"filling would add {total} readings (limit {limit}); set max_gap to skip long gaps"
        )

    # One row per missing seq, without a Python loop: ``before`` is the index of the
    # reading preceding the gap, ``offset`` runs 1..missing within each gap.
    before = np.repeat(at, missing)
    run_start = np.repeat(np.cumsum(missing) - missing, missing)
    offset = np.arange(total, dtype=np.int64) - run_start + 1
    after = before + 1
    frac = offset / (s[after] - s[before])
    t0, t1 = t[before], t[after]
    new_ts = t0 + frac * (t1 - t0)
    new_seq = s[before] + offset

    if method == "previous":
        new_values = v[before]
    else:
        # Interpolate against time. This is np.interp(new_ts, ts, values) gap by gap; done
        # by hand because np.interp silently returns garbage when ts is not increasing
        # (a stepped sensor clock elsewhere in the stream), and so vectors broadcast.
        # Where both neighbours share a timestamp, time says nothing; fall back to seq.
        dt = t1 - t0
        same = dt == 0
        w = np.divide(new_ts - t0, dt, out=frac.copy(), where=~same)
        if v.ndim == 2:
            w = w[:, np.newaxis]
        new_values = v[before] + w * (v[after] - v[before])

    order = np.argsort(np.concatenate([s, new_seq]), kind="stable")
    return FilledStream(
        seq=np.concatenate([s, new_seq])[order],
        ts=np.concatenate([t, new_ts])[order],
        values=np.concatenate([v, new_values])[order],
        filled=np.concatenate([np.zeros(s.size, np.bool_), np.ones(total, np.bool_)])[order],
    )


def stats(values: npt.ArrayLike | None) -> ValueStats | None:
    """Describe the observed values; ``None`` for an empty or record stream.

    A vector stream is described by the Euclidean norm of each reading: one magnitude per
    reading keeps the report's shape the same for every stream and is what matters for
    the usual vectors (acceleration, field strength); per-component statistics would
    multiply the report by K for little insight.
    """
    if values is None:
        return None
    v = _magnitudes(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    # Sums and squares of values near float's limit overflow: work on values scaled by a
    # power of two (exact), and scale the answers back; none of them exceeds max |v|.
    top = float(np.abs(v).max())
    shift = int(np.frexp(top)[1]) if top > _SCALE_ABOVE else 0
    w = np.ldexp(v, -shift) if shift else v
    p50, p95, p99 = np.ldexp(np.percentile(w, [50, 95, 99]), shift).tolist()
    return ValueStats(
        min=float(v.min()),
        max=float(v.max()),
        mean=float(np.ldexp(w.mean(), shift)),
        std=float(np.ldexp(w.std(ddof=0), shift)),
        p50=p50,
        p95=p95,
        p99=p99,
    )


def _magnitudes(v: FloatArray) -> FloatArray:
    """A scalar stream as it is, a vector stream as each reading's Euclidean norm (inf
    where the norm itself exceeds float range)."""
    if v.ndim == 1:
        return v
    if v.ndim != 2:
        raise ValueError(f"values must be (N,) or (N, K), got shape {v.shape}")
    if v.shape[1] == 0:
        return np.zeros(v.shape[0])
    # hypot scales as it goes: no overflow in the squares of components near 1e300.
    with np.errstate(over="ignore"):
        norms: FloatArray = np.hypot.reduce(v, axis=1)
    return norms


def skipped_values(values: npt.ArrayLike | None) -> int:
    """How many readings :func:`stats` leaves out: a value (or a vector's norm) that is no
    finite float."""
    if values is None:
        return 0
    v = _magnitudes(np.asarray(values, dtype=np.float64))
    return int(v.size - np.count_nonzero(np.isfinite(v)))


def clamp_ts(ts: npt.ArrayLike) -> tuple[FloatArray, int]:
    """The timestamps with each non-finite one or one beyond +-:data:`TS_BOUND` at that
    bound (NaN at 0), and how many were moved."""
    t = np.asarray(ts, dtype=np.float64)
    bad = ~(np.abs(t) <= TS_BOUND)
    moved = int(np.count_nonzero(bad))
    if not moved:
        return t, 0
    return np.clip(np.nan_to_num(t, nan=0.0), -TS_BOUND, TS_BOUND), moved


def _is_number(x: object) -> bool:
    # bool is an int subclass, but true/false in JSON is not a measurement.
    return isinstance(x, int | float) and not isinstance(x, bool)


def split_values(raw_values: Sequence[object]) -> tuple[ValueKind, FloatArray | None]:
    """Classify one sensor's decoded JSON values and convert them to an array.

    Returns ``("scalar", (N,) array)`` when every value is a number, ``("vector", (N, K)
    array)`` when every value is a list of K numbers (K the same throughout), and
    ``("record", None)`` otherwise: JSON objects, and also a stream that mixes kinds or
    vector lengths, since no single array describes it. An empty list is a scalar stream
    with no readings.
    """
    if all(_is_number(x) for x in raw_values):
        return "scalar", _floats(raw_values).reshape(len(raw_values))
    first = raw_values[0]
    if isinstance(first, list) and first:
        k = len(first)
        if all(
            isinstance(x, list) and len(x) == k and all(_is_number(e) for e in x)
            for x in raw_values
        ):
            return "vector", _floats(raw_values)
    return "record", None


def _floats(raw: Sequence[object]) -> FloatArray:
    """Numbers (or lists of them) as float64; an int beyond float range becomes +-inf,
    which the statistics skip, instead of an OverflowError that ends the report."""
    try:
        return np.asarray(raw, dtype=np.float64)
    except OverflowError:
        pass
    return np.asarray(
        [[_float(e) for e in x] if isinstance(x, list) else _float(x) for x in raw],
        dtype=np.float64,
    )


def _float(x: object) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")  # type: ignore[operator]


def _kind_of(values: FloatArray | None) -> ValueKind:
    if values is None:
        return "record"
    return "vector" if values.ndim == 2 else "scalar"


class Stream(NamedTuple):
    """One producer's readings of a sensor, as parallel arrays sorted by seq."""

    producer: str
    seq: npt.ArrayLike
    ts: npt.ArrayLike
    values: npt.ArrayLike | None


def sensor_report(
    seq: npt.ArrayLike,
    ts: npt.ArrayLike,
    values: npt.ArrayLike | None,
    *,
    fill: FillMethod = "linear",
    max_gap: int | None = None,
) -> SensorReport:
    """The analytics of a sensor with one (anonymous) producer; see :func:`streams_report`."""
    return streams_report([Stream("", seq, ts, values)], fill=fill, max_gap=max_gap)


def streams_report(
    streams: Sequence[Stream], *, fill: FillMethod = "linear", max_gap: int | None = None
) -> SensorReport:
    """Return the JSON-ready analytics of one sensor from its producers' streams.

    Counts, loss and dropouts are judged per producer (a producer's seqs are its own) and
    added up; the rate and the statistics are over every reading. Statistics describe the
    observed readings only; filled values are estimates and would bias them. ``fill`` and
    ``max_gap`` decide the ``filled`` count, which matches the rows :func:`fill_gaps` would
    add, without materializing them. Every stream must be of one value kind (all numbers,
    all vectors of one length, or records: ``values`` None).
    """
    if fill not in FILL_METHODS:
        raise ValueError(f"unknown fill method {fill!r}, expected one of {FILL_METHODS}")
    checked = []
    clamped = 0
    for stream in streams:
        s, t = _as_stream(stream.seq, stream.ts)
        t, moved = clamp_ts(t)
        clamped += moved
        checked.append((stream.producer, s, t, _as_values(stream.values, s.size)))
    producers: list[ProducerSummary] = []
    found: list[Dropout] = []
    omitted = 0
    filled = 0
    for producer, s, t, v in checked:
        summary = summarize(s, t)
        if summary["count"] == 0:
            continue
        producers.append(
            ProducerSummary(
                producer=producer,
                count=summary["count"],
                expected=summary["expected"],
                lost=summary["lost"],
                first_seq=int(s[0]),
                last_seq=int(s[-1]),
                first_ts=float(t[0]),
                last_ts=float(t[-1]),
            )
        )
        listed = dropouts(s, t, producer, limit=max(MAX_REPORT_DROPOUTS - len(found), 0))
        found += listed
        omitted += int(np.count_nonzero(np.diff(s) > 1)) - len(listed)
        if v is not None and fill != "none":
            filled += int(_fillable_gaps(s, max_gap)[1].sum())
    all_ts = np.concatenate([t for _, _, t, _ in checked]) if checked else np.empty(0)
    arrays = [v for _, _, _, v in checked if v is not None]
    all_values = np.concatenate(arrays) if arrays and len(arrays) == len(checked) else None
    count = sum(p["count"] for p in producers)
    expected = sum(p["expected"] for p in producers)
    lost = expected - count
    return SensorReport(
        kind=_kind_of(all_values) if checked else "scalar",
        count=count,
        expected=expected,
        lost=lost,
        loss_pct=100.0 * lost / expected if expected else 0.0,
        filled=filled,
        rate_hz=rate_hz(all_ts),
        first_seq=min((p["first_seq"] for p in producers), default=None),
        last_seq=max((p["last_seq"] for p in producers), default=None),
        first_ts=min((p["first_ts"] for p in producers), default=None),
        last_ts=max((p["last_ts"] for p in producers), default=None),
        producers=producers[:MAX_REPORT_PRODUCERS],
        dropouts=found,
        stats=stats(all_values),
        dropouts_omitted=omitted,
        producers_omitted=max(len(producers) - MAX_REPORT_PRODUCERS, 0),
        values_skipped=skipped_values(all_values),
        ts_clamped=clamped,
    )
