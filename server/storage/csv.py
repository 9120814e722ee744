"""``csv:///relative/path.csv`` and ``csv:////absolute/path.csv``: an append-only CSV file.

Columns ``sensor,producer,seq,ts,value,received_at``, the value as compact JSON text. The
keys and payloads are loaded once at open to tell duplicates from conflicts; every
``add_many`` is one append, flushed (and with ``full`` durability fsynced) before it
returns. File I/O runs in a worker thread (``asyncio.to_thread``) so a slow disk does not
stall the event loop. The header is the schema version: a version 1 file (no producer
column) is rewritten on open, its rows the anonymous producer's.
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

from forkwire.server.storage.base import (
    AddResult,
    Durability,
    Entry,
    Key,
    StoredReading,
    classify,
    decode_value,
    result_of,
    select,
)

HEADER = ("sensor", "producer", "seq", "ts", "value", "received_at")
_HEADER_V1 = ("sensor", "seq", "ts", "value", "received_at")


class CsvRepository:
    """Readings appended to one CSV file; one append per ``add_many``."""

    def __init__(
        self,
        path: Path,
        file: BinaryIO,
        payloads: dict[Key, tuple[float, str]],
        durability: Durability,
        migrated_from: int | None,
    ) -> None:
        self.path = path
        self._file = file
        self._payloads = payloads
        self._fsync = durability == "full"
        #: The schema version the file had when opened, if it was migrated.
        self.migrated_from = migrated_from
        # Appends and reads go through worker threads; one at a time, so a query never
        # reads half an append and two appends never interleave.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], durability: Durability = "normal"
    ) -> CsvRepository:
        """Open (creating if missing) the CSV file at ``path`` and load its keys."""
        target = Path(path)
        file, payloads, migrated_from = await asyncio.to_thread(_open_file, target)
        return cls(target, file, payloads, durability, migrated_from)

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Append the entries whose key is new; count duplicates and conflicts."""
        async with self._lock:
            known = {e.key: self._payloads[e.key] for e in entries if e.key in self._payloads}
            fresh, duplicates, conflicts = classify(entries, known)
            if fresh:
                await asyncio.to_thread(self._append, _format_rows(fresh, received_at))
                # Only after the append: a failed one leaves no key behind, so a retry
                # stores the readings instead of calling them duplicates.
                self._payloads.update((e.key, (e.ts, e.value)) for e in fresh)
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
        async with self._lock:
            rows = await asyncio.to_thread(_read_rows, self.path)
        rows.sort(key=lambda row: (row.sensor, row.producer, row.seq))
        return select(rows, sensors, since, producer, from_seq, limit)

    async def close(self) -> None:
        """Close the file."""
        async with self._lock:
            await asyncio.to_thread(self._file.close)

    def _append(self, data: bytes) -> None:
        end = self._file.seek(0, os.SEEK_END)
        try:
            self._file.write(data)
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
        except BaseException:
            # Take back a partial append, so the file never holds rows that were not acked.
            self._file.truncate(end)
            raise


def _format_rows(entries: Sequence[Entry], received_at: float) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(
        (e.sensor, e.producer, e.seq, repr(e.ts), e.value, repr(received_at)) for e in entries
    )
    return buffer.getvalue().encode()


def _open_file(path: Path) -> tuple[BinaryIO, dict[Key, tuple[float, str]], int | None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    migrated_from = _migrate(path)
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
            return file, {}, migrated_from
        payloads = {key: (ts, value) for key, ts, value, _ in _records(data.decode(), path)}
        return file, payloads, migrated_from
    except BaseException:
        file.close()
        raise


def _migrate(path: Path) -> int | None:
    """Rewrite a version 1 file (no producer column) in place; return 1 if it was one."""
    try:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), None)
    except FileNotFoundError:
        return None
    if header is None or tuple(header) != _HEADER_V1:
        return None
    temporary = path.with_name(path.name + ".migrating")
    with path.open(newline="") as source, temporary.open("w", newline="") as target:
        reader = csv.reader(source)
        writer = csv.writer(target, lineterminator="\n")
        next(reader)
        writer.writerow(HEADER)
        writer.writerows((sensor, "", *rest) for sensor, *rest in reader)
        target.flush()
        os.fsync(target.fileno())
    os.replace(temporary, path)
    return 1


def _records(text: str, path: Path) -> list[tuple[Key, float, str, float]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != HEADER:
        raise ValueError(f"{path} is not a forkwire readings CSV: header {header!r}")
    return [
        ((sensor, producer, int(seq)), float(ts), value, float(received_at))
        for sensor, producer, seq, ts, value, received_at in reader
    ]


def _read_rows(path: Path) -> list[StoredReading]:
    return [
        StoredReading(sensor, seq, ts, decode_value(value), received_at, producer)
        for (sensor, producer, seq), ts, value, received_at in _records(path.read_text(), path)
    ]


async def connect(url: str, durability: Durability = "normal") -> CsvRepository:
    """Open a ``csv://`` URL: three slashes relative, four absolute (as for sqlite)."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(f"csv URL takes no host: {url!r} (use csv:///path or csv:////abs)")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(f"csv URL needs a file path: {url!r}")
    return await CsvRepository.open(path, durability)
