"""``screen://``: print each reading to stdout and keep nothing, for watching a live feed.

A sink, not a store: it has nothing to query and no keys to judge duplicates by, so it
only ever gets what the store newly committed (``forkwire.server.sinks``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from forkwire.server.storage.base import AddResult, Entry


class ScreenSink:
    """Writes one line per reading to stdout."""

    def __init__(self, out: TextIO | None = None) -> None:
        # None means "sys.stdout at write time", so a redirected stdout is honoured.
        self._out = out

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Print the readings, one line each (with the producer, when there is one)."""
        out = self._out if self._out is not None else sys.stdout
        out.writelines(
            f"{e.sensor}{'@' + e.producer if e.producer else ''} #{e.seq} ts={e.ts!r} "
            f"value={e.value}\n"
            for e in entries
        )
        out.flush()
        return AddResult(stored=len(entries), duplicates=0)

    async def close(self) -> None:
        """Nothing to release; stdout is not ours to close."""
