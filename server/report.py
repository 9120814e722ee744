"""The answers to ``report`` and ``series``: analytics of stored rows, computed here.

No I/O and no presentation: callers hand in the rows they loaded, and the clients draw
the tables, the CSV and the plots from what these return.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from forkwire.protocol import (
    MAX_REPORT_SENSORS,
    AnalyticsReport,
    FillMethod,
    SensorReport,
    SeriesResult,
)
from forkwire.server.analytics import (
    FilledStream,
    Stream,
    clamp_ts,
    fill_gaps,
    split_values,
    streams_report,
)
from forkwire.server.storage.base import StreamColumns

#: The most filled points one series page adds: a gap of a million seqs is a hint to set
#: max_gap, not something to draw.
MAX_PAGE_FILL = 1_000_000


class ReadingRow(Protocol):
    """What the report needs of a stored reading (a model, a dataclass, a named tuple)."""

    @property
    def sensor(self) -> str: ...
    @property
    def producer(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> float: ...
    @property
    def value(self) -> Any: ...


def build_report(
    rows: Iterable[ReadingRow],
    *,
    fill: FillMethod = "linear",
    max_gap: int | None = None,
    now: float | None = None,
) -> AnalyticsReport:
    """Return the analytics of every sensor in ``rows``, ready for ``json.dumps``.

    Args:
        rows: stored readings in any order.
        fill: the fill method whose ``filled`` count each sensor reports.
        max_gap: gaps longer than this many seqs count as unfillable.
        now: the ``generated_at`` timestamp (UNIX seconds); the current time by default.
    """
    by_sensor: dict[str, dict[str, dict[int, tuple[float, Any]]]] = {}
    for row in rows:
        # (sensor, producer, seq) is the idempotency key, so a repeated seq is the same
        # reading stored twice by a backend without a unique index; the last copy wins.
        by_producer = by_sensor.setdefault(row.sensor, {})
        # A NULL ts (another writer) is NaN, which the analytics count and clamp.
        when = float("nan") if row.ts is None else float(row.ts)
        by_producer.setdefault(row.producer, {})[int(row.seq)] = (when, row.value)
    names = sorted(by_sensor)
    columns = []
    for name in names[:MAX_REPORT_SENSORS]:
        for producer, items in sorted(by_sensor[name].items()):
            ordered = sorted(items.items())
            columns.append(
                StreamColumns(
                    name,
                    producer,
                    np.fromiter((s for s, _ in ordered), dtype=np.int64, count=len(ordered)),
                    np.fromiter((t for _, (t, _) in ordered), dtype=np.float64, count=len(ordered)),
                    [v for _, (_, v) in ordered],
                )
            )
    return build_report_of_streams(
        columns,
        fill=fill,
        max_gap=max_gap,
        now=now,
        sensors_omitted=max(len(names) - MAX_REPORT_SENSORS, 0),
    )


def build_report_of_streams(
    columns: Sequence[StreamColumns],
    *,
    fill: FillMethod = "linear",
    max_gap: int | None = None,
    now: float | None = None,
    sensors_omitted: int = 0,
) -> AnalyticsReport:
    """:func:`build_report` of streams already grouped, each sorted by seq without repeats,
    grouped by sensor (as ``Repository.query`` orders them): the path of a store that
    hands out columns, without an object per reading.

    Args:
        sensors_omitted: the sensors the store left out (beyond ``MAX_REPORT_SENSORS``).
    """
    sensors: dict[str, SensorReport] = {}
    for name, group in itertools.groupby(columns, key=lambda c: c.sensor):
        streams = list(group)
        if len(sensors) >= MAX_REPORT_SENSORS:
            sensors_omitted += 1
            continue
        # The kind is the sensor's, over every producer: one kind for all its streams.
        raw = streams[0].values if len(streams) == 1 else [v for c in streams for v in c.values]
        _, values = split_values(raw)
        offset = 0
        parts = []
        for stream in streams:
            n = len(stream.seq)
            part = None if values is None else values[offset : offset + n]
            parts.append(Stream(stream.producer, stream.seq, stream.ts, part))
            offset += n
        sensors[name] = streams_report(parts, fill=fill, max_gap=max_gap)
    return AnalyticsReport(
        generated_at=time.time() if now is None else float(now),
        sensors=sensors,
        sensors_omitted=sensors_omitted,
    )


def _finite_fills(stream: FilledStream) -> FilledStream:
    """The stream without the filled points whose estimate is no finite float: between
    values near float's limit (or beyond it: another writer's), the line overflows, and
    JSON has no inf."""
    assert stream.values is not None
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(stream.values)
    ok = finite if finite.ndim == 1 else finite.all(axis=1)
    keep = ~stream.filled | ok
    if bool(keep.all()):
        return stream
    return FilledStream(stream.seq[keep], stream.ts[keep], stream.values[keep], stream.filled[keep])


class StoredRow(ReadingRow, Protocol):
    """A stored reading: a row plus the time of the commit that stored it."""

    @property
    def received_at(self) -> float: ...


def build_series(
    sensor: str,
    producer: str,
    rows: Sequence[StoredRow],
    *,
    after: int | None,
    limit: int,
    fill: FillMethod,
    max_gap: int | None,
) -> SeriesResult:
    """One page of ``series``: one producer's observed readings of a sensor with
    ``seq > after``, and the filled points of the gap before each.

    Args:
        rows: the sensor's stored readings with ``seq >= after`` in seq order: the one at
            ``after`` (if stored; the left neighbour of the first gap, not repeated in this
            page), a page, and one more to tell whether another page follows. More rows
            than that (``limit + 2``) are ignored.
        limit: observed readings per page; ``next`` is the seq of the page's last
            observed reading when more may follow.

    Raises:
        ValueError: filling would add more points than one page may hold; set max_gap.
    """
    context = 1 if rows and after is not None and rows[0].seq == after else 0
    observed = list(rows[context : context + limit])
    more = len(rows) - context > limit
    base = [*rows[:context], *observed]
    raw = [row.value for row in base]
    kind, values = split_values(raw) if base else ("record", None)
    seq = np.fromiter((r.seq for r in base), dtype=np.int64, count=len(base))
    ts, _ = clamp_ts(
        np.fromiter(
            (np.nan if r.ts is None else r.ts for r in base), dtype=np.float64, count=len(base)
        )
    )
    # Each gap is filled between its own two neighbours only, so a page fills exactly as
    # the whole stream would; a record or mixed page (values None) is never filled.
    # Between values near float's limit the line overflows: those points are dropped
    # below, without a RuntimeWarning in the log for each.
    with np.errstate(over="ignore", invalid="ignore"):
        filled = fill_gaps(
            seq, ts, values if kind != "record" else None, fill, max_gap, limit=MAX_PAGE_FILL
        )
    if filled.values is not None:
        filled = _finite_fills(filled)
    received = iter(row.received_at for row in base)
    observed_values = iter(raw)
    points_value: list[Any] = []
    points_received: list[float | None] = []
    for index, is_filled in enumerate(filled.filled.tolist()):
        if is_filled:
            assert filled.values is not None
            points_value.append(filled.values[index].tolist())
            points_received.append(None)
        else:
            points_value.append(next(observed_values))
            points_received.append(next(received))
    skip = 1 if context else 0  # the neighbour belongs to the previous page
    return SeriesResult.model_construct(
        type="series_result",
        sensor=sensor,
        producer=producer,
        seq=filled.seq.tolist()[skip:],
        ts=filled.ts.tolist()[skip:],
        value=points_value[skip:],
        filled=filled.filled.tolist()[skip:],
        received_at=points_received[skip:],
        next=observed[-1].seq if more and observed else None,
    )
