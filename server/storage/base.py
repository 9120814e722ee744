"""What every storage backend promises, and the pieces they share.

A repository stores readings under the idempotency key ``(sensor, seq)``: a reading whose
key is already stored is not stored again, it is counted as a duplicate. ``add_many`` is
one transaction, so the writer's group commit is exactly one commit per call.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from forkwire.protocol.messages import Reading

#: The idempotency key of a reading.
Key: TypeAlias = tuple[str, int]


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as stored, with the wall-clock time of the commit that stored it."""

    sensor: str
    seq: int
    ts: float
    value: Any
    received_at: float

    @property
    def key(self) -> Key:
        """The idempotency key ``(sensor, seq)``."""
        return (self.sensor, self.seq)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What one ``add_many`` did.

    ``duplicate_keys`` names the keys of the readings that were not stored because the key
    was already stored (before or earlier in the same batch). Aggregate counts alone cannot
    tell the group-commit writer which of the submissions it merged owned a duplicate, so
    every backend here fills it; it is empty in the common case of no duplicates.
    """

    stored: int
    duplicates: int
    duplicate_keys: frozenset[Key] = field(default_factory=frozenset)


class Repository(Protocol):
    """A store of readings keyed by ``(sensor, seq)``."""

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Store the readings whose key is new, in one transaction; count the others."""
        ...

    async def query(
        self,
        sensors: Sequence[str] | None = None,
        since: float | None = None,
        *,
        from_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Stored readings ordered by ``(sensor, seq)``: of some sensors, with ts >= since
        and seq >= from_seq, at most ``limit`` of them (each filter optional)."""
        ...

    async def close(self) -> None:
        """Release the backend's resources; the repository is unusable afterwards."""
        ...


def encode_value(value: Any) -> str:
    """Compact JSON text of a reading's value.

    Every backend keeps the value as JSON text in one column, so any value kind (int, float,
    vector, record) fits and decodes back to its own type.
    """
    return json.dumps(value, separators=(",", ":"))


def decode_value(text: str) -> Any:
    """The value back from its JSON text: ints stay ints, floats stay floats."""
    return json.loads(text)


def split_duplicates(readings: Iterable[Reading]) -> tuple[list[Reading], list[Key]]:
    """Split a batch into its first occurrence of each key and the keys seen again."""
    seen: set[Key] = set()
    unique: list[Reading] = []
    repeated: list[Key] = []
    for reading in readings:
        key = (reading.sensor, reading.seq)
        if key in seen:
            repeated.append(key)
        else:
            seen.add(key)
            unique.append(reading)
    return unique, repeated


def result_of(total: int, duplicate_keys: Iterable[Key]) -> AddResult:
    """An ``AddResult`` for a batch of ``total`` readings of which these were duplicates."""
    keys = list(duplicate_keys)
    return AddResult(stored=total - len(keys), duplicates=len(keys), duplicate_keys=frozenset(keys))


def select(
    rows: Iterable[StoredReading],
    sensors: Sequence[str] | None,
    since: float | None,
    from_seq: int | None,
    limit: int | None,
) -> list[StoredReading]:
    """``Repository.query``'s filters over rows already in ``(sensor, seq)`` order."""
    wanted = None if sensors is None else frozenset(sensors)
    selected = (
        row
        for row in rows
        if (wanted is None or row.sensor in wanted)
        and (since is None or row.ts >= since)
        and (from_seq is None or row.seq >= from_seq)
    )
    return list(itertools.islice(selected, limit))
