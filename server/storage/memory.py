"""``memory://``: a repository in a dict, for tests and throwaway runs."""

from __future__ import annotations

from collections.abc import Sequence

from forkwire.server.storage.base import (
    AddResult,
    Entry,
    Key,
    StoredReading,
    classify,
    decode_value,
    result_of,
    select,
)


class MemoryRepository:
    """Readings in a dict keyed by ``(sensor, producer, seq)``; gone when the process ends."""

    def __init__(self) -> None:
        self._rows: dict[Key, StoredReading] = {}
        self._payloads: dict[Key, tuple[float, str]] = {}

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Store the entries whose key is new."""
        known = {e.key: self._payloads[e.key] for e in entries if e.key in self._payloads}
        fresh, duplicates, conflicts = classify(entries, known)
        for entry in fresh:
            key = entry.key
            self._payloads[key] = (entry.ts, entry.value)
            # Decoded from the JSON text, as the other backends do, so the types match.
            self._rows[key] = StoredReading(
                entry.sensor,
                entry.seq,
                entry.ts,
                decode_value(entry.value),
                received_at,
                entry.producer,
            )
        return result_of(len(fresh), duplicates, conflicts)

    async def query(
        self,
        sensors: Sequence[str] | None = None,
        since: float | None = None,
        *,
        producer: str | None = None,
        from_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Stored readings ordered by ``(sensor, producer, seq)``; see ``Repository.query``."""
        rows = [self._rows[key] for key in sorted(self._rows)]
        return select(rows, sensors, since, producer, from_seq, limit)

    async def close(self) -> None:
        """Nothing to release."""


async def connect(url: str) -> MemoryRepository:
    """Open ``memory://``: a new, empty repository each time."""
    return MemoryRepository()
