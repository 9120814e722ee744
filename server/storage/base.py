"""What every storage backend promises, and the pieces they share.

A repository stores readings under the idempotency key ``(sensor, seq)``: a reading whose
key is already stored is not stored again, it is counted as a duplicate. ``add_many`` is
one transaction, so the writer's group commit is exactly one commit per call.
"""

from __future__ import annotations

import asyncio
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
        self, sensors: Sequence[str] | None = None, since: float | None = None
    ) -> list[StoredReading]:
        """Stored readings ordered by ``(sensor, seq)``, optionally of some sensors, ts >= since."""
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


class Fanout:
    """Sends every batch to several repositories; reads from the first.

    The first repository is the one acks and queries trust: its ``AddResult`` is returned.
    A batch counts as committed only when every repository committed it, so a failure of
    any of them fails the call (after all of them finished, so none is left running).
    """

    def __init__(self, repos: Sequence[Repository]) -> None:
        if not repos:
            raise ValueError("Fanout needs at least one repository")
        self._repos = tuple(repos)

    @property
    def repos(self) -> tuple[Repository, ...]:
        """The repositories, the primary first."""
        return self._repos

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Add the batch to every repository concurrently; the first one's result."""
        results = await asyncio.gather(
            *(repo.add_many(readings, received_at) for repo in self._repos),
            return_exceptions=True,
        )
        _raise_first(results)
        first = results[0]
        assert isinstance(first, AddResult)
        return first

    async def query(
        self, sensors: Sequence[str] | None = None, since: float | None = None
    ) -> list[StoredReading]:
        """Query the first repository."""
        return await self._repos[0].query(sensors, since)

    async def close(self) -> None:
        """Close every repository, even when one of them fails to close."""
        results = await asyncio.gather(
            *(repo.close() for repo in self._repos), return_exceptions=True
        )
        _raise_first(results)


def _raise_first(results: Iterable[object]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result
