"""``sqlite:///relative/path.sqlite`` and ``sqlite:////absolute/path.sqlite`` (aiosqlite).

The default store. WAL lets the analytics read while the writer commits, and
``synchronous=NORMAL`` is the setting SQLite recommends with WAL: a commit survives a crash
of the process; only a power loss may take back the last commits, never corrupt the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import aiosqlite

from forkwire.protocol.messages import Reading
from forkwire.server.storage.base import (
    AddResult,
    StoredReading,
    decode_value,
    encode_value,
    result_of,
    split_duplicates,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    sensor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL,
    value TEXT,  -- JSON
    received_at REAL,
    PRIMARY KEY (sensor, seq)
)
"""

# Which keys of the batch are stored already. Run inside BEGIN IMMEDIATE, which holds the
# write lock, so nobody can store one of them between this and the INSERT: the answer is
# exact. One JSON parameter instead of two placeholders per key keeps clear of SQLite's
# bound-variable limit.
_EXISTING = """
SELECT r.sensor, r.seq
FROM json_each(?) AS j
JOIN readings AS r
    ON r.sensor = json_extract(j.value, '$[0]') AND r.seq = json_extract(j.value, '$[1]')
"""

_INSERT = (
    "INSERT OR IGNORE INTO readings (sensor, seq, ts, value, received_at) VALUES (?, ?, ?, ?, ?)"
)

#: How long a write waits for another process holding the lock before it fails.
_BUSY_TIMEOUT_MS = 5000


class SQLiteRepository:
    """Readings in one SQLite file, one transaction per ``add_many``."""

    def __init__(self, db: aiosqlite.Connection, path: str) -> None:
        self._db = db
        self.path = path
        # One connection: a transaction spans several awaits, so calls must not interleave.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SQLiteRepository:
        """Open (creating if missing) the database file at ``path``."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the sqlite3 module must not open transactions behind our back;
        # add_many opens its own with BEGIN IMMEDIATE.
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            await db.execute(_SCHEMA)
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Insert the batch in one transaction; existing keys are ignored and counted."""
        unique, duplicates = split_duplicates(readings)
        if not unique:
            return result_of(len(readings), duplicates)
        keys = json.dumps([[r.sensor, r.seq] for r in unique])
        rows = [(r.sensor, r.seq, float(r.ts), encode_value(r.value), received_at) for r in unique]
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                existing = await self._db.execute_fetchall(_EXISTING, (keys,))
                cursor = await self._db.executemany(_INSERT, rows)
                stored = cursor.rowcount
                await self._db.execute("COMMIT")
            except BaseException:
                # Keep the original error: a failed COMMIT may have ended the transaction.
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise
        duplicates.extend((str(sensor), int(seq)) for sensor, seq in existing)
        return AddResult(
            stored=stored,
            duplicates=len(readings) - stored,
            duplicate_keys=frozenset(duplicates),
        )

    async def query(
        self,
        sensors: Sequence[str] | None = None,
        since: float | None = None,
        *,
        from_seq: int | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Stored readings ordered by ``(sensor, seq)``; see ``Repository.query``."""
        clauses: list[str] = []
        params: list[object] = []
        if sensors is not None:
            clauses.append("sensor IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(sensors)))
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if from_seq is not None:
            clauses.append("seq >= ?")
            params.append(from_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT sensor, seq, ts, value, received_at FROM readings {where} ORDER BY sensor, seq"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._lock:
            rows = await self._db.execute_fetchall(sql, params)
        return [
            StoredReading(sensor, seq, ts, decode_value(value), received_at)
            for sensor, seq, ts, value, received_at in rows
        ]

    async def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL on the last close)."""
        await self._db.close()


async def connect(url: str) -> SQLiteRepository:
    """Open a ``sqlite://`` URL, SQLAlchemy-style: three slashes relative, four absolute."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"sqlite URL takes no host: {url!r} (use sqlite:///path or sqlite:////abs)"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(
            f"sqlite URL needs a file path: {url!r} (sqlite:///rel.sqlite, "
            "sqlite:////abs.sqlite; memory:// for a store that lives in memory)"
        )
    return await SQLiteRepository.open(path)
