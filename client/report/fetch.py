"""The report and the sensors' series, asked of a server page by page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from forkwire.client.connection import Connection, describe_error
from forkwire.client.errors import ClientError
from forkwire.protocol import (
    AnalyticsReport,
    Error,
    FillMethod,
    Report,
    ReportResult,
    Series,
    SeriesResult,
    ValueKind,
)

#: Points per series request; a page of scalar readings is about half a megabyte.
PAGE = 10_000


class ReportFailed(ClientError):
    """The report could not be produced; the message says why."""


@dataclass(frozen=True)
class ReportQuery:
    """What to report on and how: some sensors (all by default), readings with
    ``ts >= since``, and the gap filling of the series and of the ``filled`` counts."""

    sensors: Sequence[str] | None = None
    since: float | None = None
    fill: FillMethod = "linear"
    max_gap: int | None = None


@dataclass(frozen=True)
class SensorSeries:
    """One sensor's points, observed and filled, in seq order."""

    sensor: str
    kind: ValueKind
    seq: npt.NDArray[np.int64]
    ts: npt.NDArray[np.float64]
    #: The values as stored (an int stays an int) and, for filled points, the estimates.
    raw: list[Any]
    filled: npt.NDArray[np.bool_]
    received_at: list[float | None]
    #: Whose readings ("": the anonymous producer); each producer's seqs count on their own.
    producer: str = ""

    @property
    def values(self) -> npt.NDArray[np.float64] | None:
        """The values as numbers ((N,) or (N, K)); None for a record stream."""
        if self.kind == "record":
            return None
        return _floats(self.raw)

    @property
    def observed(self) -> npt.NDArray[np.bool_]:
        """True for the points that were stored, False for the filled ones."""
        return ~self.filled


def _floats(raw: Sequence[Any]) -> npt.NDArray[np.float64]:
    """Numbers (or lists of them) as float64; an int beyond float range (stored by another
    writer: this server refuses it) is NaN, a hole in the plot, not an OverflowError."""
    try:
        return np.asarray(raw, dtype=np.float64)
    except OverflowError:
        pass
    return np.asarray(
        [[_float(e) for e in x] if isinstance(x, list) else _float(x) for x in raw],
        dtype=np.float64,
    )


def _float(x: Any) -> float:
    try:
        return float(x)
    except (OverflowError, TypeError, ValueError):
        return float("nan")


async def fetch_report(connection: Connection, query: ReportQuery) -> AnalyticsReport:
    """Ask for the report.

    Raises:
        ReportFailed: the server refused, or answered something else.
    """
    reply = await connection.request(
        Report(
            sensors=list(query.sensors) if query.sensors else None,
            since=query.since,
            fill=query.fill,
            max_gap=query.max_gap,
        )
    )
    if isinstance(reply, Error):
        raise ReportFailed(f"the server answered {describe_error(reply)}")
    if not isinstance(reply, ReportResult):
        raise ReportFailed(f"the server answered {reply.type!r} to a report request")
    return reply.report


async def fetch_series(
    connection: Connection,
    sensor: str,
    kind: ValueKind,
    query: ReportQuery,
    *,
    producer: str = "",
    page: int = PAGE,
) -> SensorSeries:
    """Ask for every page of one sensor's series, as sent by ``producer`` ("": anonymous).

    Raises:
        ReportFailed: the server refused a page, or answered something else.
    """
    seq: list[int] = []
    ts: list[float] = []
    raw: list[Any] = []
    filled: list[bool] = []
    received: list[float | None] = []
    after: int | None = None
    while True:
        reply = await connection.request(
            Series(
                sensor=sensor,
                producer=producer or None,
                since=query.since,
                fill=query.fill,
                max_gap=query.max_gap,
                after=after,
                limit=page,
            )
        )
        if isinstance(reply, Error):
            raise ReportFailed(f"the series of {sensor}: {describe_error(reply)}")
        if not isinstance(reply, SeriesResult):
            raise ReportFailed(f"the server answered {reply.type!r} to a series request")
        seq += reply.seq
        ts += reply.ts
        raw += reply.value
        filled += reply.filled
        received += reply.received_at
        if reply.next is None:
            break
        after = reply.next
    return SensorSeries(
        sensor=sensor,
        kind=kind,
        seq=np.asarray(seq, dtype=np.int64),
        ts=np.asarray(ts, dtype=np.float64),
        raw=raw,
        filled=np.asarray(filled, dtype=np.bool_),
        received_at=received,
        producer=producer,
    )
