"""``csv:///relative/path.csv`` and ``csv:////absolute/path.csv``: an append-only CSV file.

Columns ``sensor,seq,ts,value,received_at``, the value as compact JSON text. The keys are
loaded once at open to tell duplicates; every ``add_many`` is one append, flushed and
fsynced before it returns, so what is acked is on disk. File I/O runs in a worker thread
(``asyncio.to_thread``) so a slow disk does not stall the event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

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

HEADER = ("sensor", "seq", "ts", "value", "received_at")


class CsvRepository:
    """Readings appended to one CSV file; one append + fsync per ``add_many``."""

    def __init__(self, path: Path, file: BinaryIO, keys: set[Key]) -> None:
        self.path = path
        self._file = file
        self._keys = keys
        # Appends and reads go through worker threads; one at a time, so a query never
        # reads half an append and two appends never interleave.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> CsvRepository:
        """Open (creating if missing) the CSV file at ``path`` and load its keys."""
        target = Path(path)
        file, keys = await asyncio.to_thread(_open_file, target)
        return cls(target, file, keys)

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Append the readings whose key is new, then flush and fsync."""
        unique, duplicates = split_duplicates(readings)
        async with self._lock:
            new: list[Reading] = []
            for reading in unique:
                key = (reading.sensor, reading.seq)
                if key in self._keys:
                    duplicates.append(key)
                else:
                    new.append(reading)
            if new:
                await asyncio.to_thread(self._append, _format_rows(new, received_at))
                # Only after the append is durable: a failed one leaves no key behind, so a
                # retry stores the readings instead of calling them duplicates.
                self._keys.update((r.sensor, r.seq) for r in new)
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
        async with self._lock:
            rows = await asyncio.to_thread(_read_rows, self.path)
        rows.sort(key=lambda row: (row.sensor, row.seq))
        return select(rows, sensors, since, from_seq, limit)

    async def close(self) -> None:
        """Close the file."""
        async with self._lock:
            await asyncio.to_thread(self._file.close)

    def _append(self, data: bytes) -> None:
        end = self._file.seek(0, os.SEEK_END)
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except BaseException:
            # Take back a partial append, so the file never holds rows that were not acked.
            self._file.truncate(end)
            raise


def _format_rows(readings: Sequence[Reading], received_at: float) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(
        (r.sensor, r.seq, repr(float(r.ts)), encode_value(r.value), repr(received_at))
        for r in readings
    )
    return buffer.getvalue().encode()


def _open_file(path: Path) -> tuple[BinaryIO, set[Key]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.open("a+b")
    try:
        file.seek(0)
        data = file.read()
        # JSON text has no raw newline, so every record is one line: a last line without
        # its newline is an append cut short by a crash, never acked. Drop it.
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            file.truncate(complete)
            data = data[:complete]
        if not data:
            file.write((",".join(HEADER) + "\n").encode())
            file.flush()
            os.fsync(file.fileno())
            return file, set()
        rows = _parse(data.decode(), path)
        return file, {row.key for row in rows}
    except BaseException:
        file.close()
        raise


def _read_rows(path: Path) -> list[StoredReading]:
    return _parse(path.read_text(), path)


def _parse(text: str, path: Path) -> list[StoredReading]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != HEADER:
        raise ValueError(f"{path} is not a forkwire readings CSV: header {header!r}")
    return [
        StoredReading(sensor, int(seq), float(ts), decode_value(value), float(received_at))
        for sensor, seq, ts, value, received_at in reader
    ]


async def connect(url: str) -> CsvRepository:
    """Open a ``csv://`` URL: three slashes relative, four absolute (as for sqlite)."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(f"csv URL takes no host: {url!r} (use csv:///path or csv:////abs)")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(f"csv URL needs a file path: {url!r}")
    return await CsvRepository.open(path)
