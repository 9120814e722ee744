"""``memory://``: a repository in a dict, for tests and throwaway runs."""

from __future__ import annotations

from collections.abc import Sequence

from forkwire.protocol.messages import Reading
from forkwire.server.storage.base import (
    AddResult,
    Key,
    StoredReading,
    decode_value,
    encode_value,
    result_of,
    select,
    split_duplicates,
)


class MemoryRepository:
    """Readings in a dict keyed by ``(sensor, seq)``; gone when the process ends."""

    def __init__(self) -> None:
        self._rows: dict[Key, StoredReading] = {}

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Store the readings whose key is new."""
        unique, duplicates = split_duplicates(readings)
        for reading in unique:
            key = (reading.sensor, reading.seq)
            if key in self._rows:
                duplicates.append(key)
                continue
            # A JSON round trip, as the other backends do, so a caller mutating its list or
            # dict afterwards cannot change what is "stored", and the types match theirs.
            value = decode_value(encode_value(reading.value))
            self._rows[key] = StoredReading(
                reading.sensor, reading.seq, float(reading.ts), value, received_at
            )
        return result_of(len(readings), duplicates)

    async def query(
        self,
        sensors: Sequence[str] | None = None,
        since: float | None = None,
        *,
        from_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Stored readings ordered by ``(sensor, seq)``; see ``Repository.query``."""
        rows = [self._rows[key] for key in sorted(self._rows)]
        return select(rows, sensors, since, from_seq, limit)

    async def close(self) -> None:
        """Nothing to release."""


async def connect(url: str) -> MemoryRepository:
    """Open ``memory://``: a new, empty repository each time."""
    return MemoryRepository()
