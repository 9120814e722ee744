"""``screen://``: print each reading to stdout and keep nothing, for watching a live feed.

It tracks no keys, so it reports every reading as stored: put it behind a real store in a
``Fanout`` (``Fanout([sqlite, screen])``) when duplicates and queries matter.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from forkwire.protocol.messages import Reading
from forkwire.server.storage.base import AddResult, StoredReading, encode_value


class ScreenRepository:
    """Writes one line per reading; stores nothing, so ``query`` is always empty."""

    def __init__(self, out: TextIO | None = None) -> None:
        # None means "sys.stdout at write time", so a redirected stdout is honoured.
        self._out = out

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Print the readings, one line each."""
        out = self._out if self._out is not None else sys.stdout
        out.writelines(
            f"{r.sensor} #{r.seq} ts={r.ts!r} value={encode_value(r.value)}\n" for r in readings
        )
        out.flush()
        return AddResult(stored=len(readings), duplicates=0)

    async def query(
        self, sensors: Sequence[str] | None = None, since: float | None = None
    ) -> list[StoredReading]:
        """Nothing is stored."""
        return []

    async def close(self) -> None:
        """Nothing to release; stdout is not ours to close."""


async def connect(url: str) -> ScreenRepository:
    """Open ``screen://``."""
    return ScreenRepository()
