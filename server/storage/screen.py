"""``screen://``: print each reading to stdout and keep nothing, for watching a live feed.

A sink, not a store: it has nothing to query and no keys to judge duplicates by, so it
only ever gets what the store newly committed (``forkwire.server.sinks``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from forkwire.protocol import Reading
from forkwire.server.storage.base import AddResult, encode_value


class ScreenSink:
    """Writes one line per reading to stdout."""

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

    async def close(self) -> None:
        """Nothing to release; stdout is not ours to close."""
