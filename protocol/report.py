"""The shape of the analytics report a ``report_result`` carries.

The server computes it (``forkwire.server.analytics``); clients render it. These are
TypedDicts, not models: the report is built as plain JSON-ready dicts by numpy code, and
pydantic validates it on the way in all the same. Timestamps are UNIX seconds, rates
readings per second, and every count is of readings.
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired, TypeAlias

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs it, not typing's, before 3.12

#: How gaps are filled: interpolated against time, the reading before, or not at all.
FillMethod: TypeAlias = Literal["linear", "previous", "none"]
FILL_METHODS: Final[tuple[FillMethod, ...]] = ("linear", "previous", "none")

#: ``scalar``: every value a number; ``vector``: every value a list of K numbers (one K);
#: ``record``: anything else (JSON objects, or a stream mixing kinds), never filled.
ValueKind: TypeAlias = Literal["scalar", "vector", "record"]

#: The most dropouts a sensor's report lists (the first, by producer then seq) and the
#: most producers; ``dropouts_omitted`` and ``producers_omitted`` count the rest. They
#: bound a report's size whatever is stored: a store with 700,000 dropouts once made a
#: 68 MB report.
MAX_REPORT_DROPOUTS: Final = 100
MAX_REPORT_PRODUCERS: Final = 100
#: The most sensors a report describes (the first, by name); ``sensors_omitted`` counts
#: the rest, which a ``report`` naming them describes. Readings under a million sensor
#: names would otherwise make every report hundreds of megabytes.
MAX_REPORT_SENSORS: Final = 1000

_FORBID: Final = ConfigDict(extra="forbid")


@with_config(_FORBID)
class Dropout(TypedDict):
    """One run of consecutive missing seqs of one producer, and the timestamps of the
    readings around it: ``start_ts`` of the last reading before the gap, ``end_ts`` of the
    first after it."""

    producer: str
    first_seq: int
    last_seq: int
    count: int
    start_ts: float
    end_ts: float


@with_config(_FORBID)
class ValueStats(TypedDict):
    """The observed values: population std, linear percentiles; a vector by its norm."""

    min: float
    max: float
    mean: float
    std: float
    p50: float
    p95: float
    p99: float


@with_config(_FORBID)
class ProducerSummary(TypedDict):
    """One producer's stream of a sensor: its readings and the seqs missing in its range
    (``""`` is the anonymous producer, readings sent without one)."""

    producer: str
    count: int
    expected: int
    lost: int
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float


@with_config(_FORBID)
class SensorReport(TypedDict):
    """One sensor's analytics, over every producer that sent readings of it.

    Seqs count per producer, so ``expected`` and ``lost`` add up each producer's
    ``[first_seq, last_seq]`` (loss before its first or after its last received reading
    cannot be seen): a restarted fleet with a fresh outbox is a new producer, not a gap,
    and a second fleet using the same sensor names is not a pile of duplicates.
    ``first_seq``/``last_seq`` are the lowest and highest seq over the producers. ``filled``
    is what the fill method would add (interior gaps within ``max_gap``). ``rate_hz`` is
    ``count - 1`` over the span of ``ts``, null with fewer than two readings or a zero
    span. ``stats`` is null for a record stream.

    ``dropouts`` lists the first 100 dropouts and ``producers`` the first 100 producers
    (by name); the counts, loss and extent cover all of them. The four counts at the end
    are 0, or absent (servers before them), in the common case: data another writer (or an
    older server) stored beyond the ingest limits is reported, never fatal.
    """

    kind: ValueKind
    count: int
    expected: int
    lost: int
    loss_pct: float
    filled: int
    rate_hz: float | None
    first_seq: int | None
    last_seq: int | None
    first_ts: float | None
    last_ts: float | None
    producers: list[ProducerSummary]
    dropouts: list[Dropout]
    stats: ValueStats | None
    dropouts_omitted: NotRequired[int]
    """Dropouts beyond the ones listed."""
    producers_omitted: NotRequired[int]
    """Producers beyond the ones listed."""
    values_skipped: NotRequired[int]
    """Readings left out of ``stats``: a value that is no finite float (an int of hundreds
    of digits, a vector whose norm overflows)."""
    ts_clamped: NotRequired[int]
    """Readings whose ``ts`` was not finite or beyond +-253402300799 (year 9999), counted
    at that bound so that spans and rates stay finite."""


@with_config(_FORBID)
class AnalyticsReport(TypedDict):
    """The whole report: when it was made and each sensor's analytics, by name (at most
    1,000 sensors; ``sensors_omitted`` counts the rest)."""

    generated_at: float
    sensors: dict[str, SensorReport]
    sensors_omitted: NotRequired[int]
    """Sensors beyond the first 1,000 by name, not described (0, or absent from servers
    before it)."""
