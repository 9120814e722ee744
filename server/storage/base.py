"""What every storage backend promises, and the pieces they share.

A repository stores readings under the idempotency key ``(sensor, producer, seq)``: the
producer is the client's stream (kept with its outbox), so a sensor name reused by a
fresh outbox or a second process is a new stream, stored in full. A reading whose key is
stored already with the same ``ts`` and value is a *duplicate* (a resend: not stored
again, acked again); with another ``ts`` or value it is a *conflict* (not stored, never
acked). ``add_many`` is one transaction, so the writer's group commit is one commit per
call.

Schema version 2 (producers). A store of version 1 (key ``(sensor, seq)``) is migrated
when it is opened: its readings become the anonymous producer's (``""``), the producer a
version 1 client still writes as.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

#: The idempotency key of a reading: ``(sensor, producer, seq)``.
Key: TypeAlias = tuple[str, str, int]

#: The version of the stores this code writes.
SCHEMA_VERSION = 2

#: ``normal``: a commit survives a crash of the process; ``full``: of the machine too.
Durability: TypeAlias = Literal["normal", "full"]


class Entry(NamedTuple):
    """A reading to store: who sent it, and its value as the JSON text that is stored."""

    sensor: str
    producer: str
    seq: int
    ts: float
    value: str

    @property
    def key(self) -> Key:
        """The idempotency key."""
        return (self.sensor, self.producer, self.seq)


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as stored, with the wall-clock time of the commit that stored it."""

    sensor: str
    seq: int
    ts: float
    value: Any
    received_at: float
    producer: str = ""

    @property
    def key(self) -> Key:
        """The idempotency key."""
        return (self.sensor, self.producer, self.seq)


class StreamColumns(NamedTuple):
    """One producer's readings of a sensor as columns, sorted by seq: what a report reads
    of a store, without an object per reading (a report over 700,000 readings spent most
    of its seconds making and collecting them)."""

    sensor: str
    producer: str
    seq: npt.NDArray[np.int64]
    #: NaN where the store holds no ts.
    ts: npt.NDArray[np.float64]
    #: The decoded values.
    values: list[Any]


@dataclass(frozen=True, slots=True)
class AddResult:
    """What one ``add_many`` did.

    ``duplicate_keys`` and ``conflict_keys`` name the readings that were not stored: the
    group-commit writer merges several submissions into one call and must tell each which
    of its readings those were. Both are empty in the common case.
    """

    stored: int
    duplicates: int
    duplicate_keys: frozenset[Key] = field(default_factory=frozenset)
    conflict_keys: frozenset[Key] = field(default_factory=frozenset)


class Repository(Protocol):
    """A store of readings keyed by ``(sensor, producer, seq)``."""

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Store the entries whose key is new, in one transaction; count the others."""
        ...

    async def query(
        self,
        sensors: Sequence[str] | None = None,
        since: float | None = None,
        *,
        producer: str | None = None,
        from_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Stored readings ordered by ``(sensor, producer, seq)``: of some sensors, of one
        producer, with ts >= since and seq >= from_seq, at most ``limit`` of them (each
        filter optional)."""
        ...

    async def close(self) -> None:
        """Release the backend's resources; the repository is unusable afterwards."""
        ...


@runtime_checkable
class ColumnStore(Protocol):
    """A repository that can also hand out whole streams as columns (SQLite); reports use
    it when there, ``Repository.query`` otherwise."""

    async def stream_columns(
        self, sensors: Sequence[str] | None, since: float | None, *, max_sensors: int
    ) -> tuple[list[StreamColumns], int]:
        """The streams of the first ``max_sensors`` sensors by name, grouped by sensor and
        ordered by (sensor, producer), each sorted by seq; and how many sensors are left
        out."""
        ...


class SchemaError(ValueError):
    """A store of a schema this code cannot use (a newer one); the message says what to do."""


def encode_value(value: Any) -> str:
    """Compact JSON text of a reading's value.

    Every backend keeps the value as JSON text in one column, so any value kind (int, float,
    vector, record) fits and decodes back to its own type, and a resent reading compares
    equal to the stored one by its text.
    """
    return json.dumps(value, separators=(",", ":"))


def decode_value(text: str) -> Any:
    """The value back from its JSON text: ints stay ints, floats stay floats."""
    return json.loads(text)


def decode_values(texts: Sequence[str | None]) -> list[Any]:
    """Many values back from their JSON texts at once.

    One parse of the texts joined into a JSON array is about twenty times faster than a
    parse per row, which is what a report over a whole store spends most of its time on.
    Should a text not be JSON on its own (another writer's), each is parsed alone, a
    broken one as ``None``.
    """
    values: list[Any] = []
    # In slices: one json.loads holds the GIL throughout, and a whole store's worth would
    # stall the event loop (in another thread) for a fifth of a second.
    for start in range(0, len(texts), _DECODE_SLICE):
        part = texts[start : start + _DECODE_SLICE]
        try:
            decoded = json.loads("[" + ",".join(t if t is not None else "null" for t in part) + "]")
        except (ValueError, TypeError, RecursionError):
            decoded = None
        if not (isinstance(decoded, list) and len(decoded) == len(part)):
            decoded = [_decode_or_none(t) for t in part]
        values += decoded
    return values


#: Values parsed by one ``json.loads`` in :func:`decode_values` (a few milliseconds).
_DECODE_SLICE = 8192


def _decode_or_none(text: str | None) -> Any:
    try:
        return None if text is None else json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return None


def classify(
    entries: Iterable[Entry], stored: dict[Key, tuple[float, str]]
) -> tuple[list[Entry], list[Key], list[Key]]:
    """Split a batch into the entries to insert, the duplicates and the conflicts.

    Args:
        stored: ``(ts, value)`` of the keys of the batch that are stored already.

    The first entry of a key new to the store is inserted; a later one with the same ts
    and value is a duplicate, with another a conflict, as against a stored reading.
    """
    known = dict(stored)
    fresh: list[Entry] = []
    duplicates: list[Key] = []
    conflicts: list[Key] = []
    for entry in entries:
        key = entry.key
        payload = known.get(key)
        if payload is None:
            known[key] = (entry.ts, entry.value)
            fresh.append(entry)
        elif payload == (entry.ts, entry.value):
            duplicates.append(key)
        else:
            conflicts.append(key)
    return fresh, duplicates, conflicts


def result_of(stored: int, duplicates: Iterable[Key], conflicts: Iterable[Key]) -> AddResult:
    """An ``AddResult`` naming the keys that were not stored."""
    duplicate_keys = list(duplicates)
    return AddResult(
        stored=stored,
        duplicates=len(duplicate_keys),
        duplicate_keys=frozenset(duplicate_keys),
        conflict_keys=frozenset(conflicts),
    )


def select(
    rows: Iterable[StoredReading],
    sensors: Sequence[str] | None,
    since: float | None,
    producer: str | None,
    from_seq: int | None,
    limit: int | None,
) -> list[StoredReading]:
    """``Repository.query``'s filters over rows already in ``(sensor, producer, seq)`` order."""
    wanted = None if sensors is None else frozenset(sensors)
    selected = (
        row
        for row in rows
        if (wanted is None or row.sensor in wanted)
        and (producer is None or row.producer == producer)
        and (since is None or row.ts >= since)
        and (from_seq is None or row.seq >= from_seq)
    )
    return list(itertools.islice(selected, limit))
