"""``sqlite:///relative/path.sqlite`` and ``sqlite:////absolute/path.sqlite`` (aiosqlite).

The default store. WAL lets the analytics read while the writer commits; the durability
setting picks ``synchronous`` (see :meth:`SQLiteRepository.open`). The schema version is
SQLite's ``user_version``.
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

from forkwire.server.storage.base import (
    SCHEMA_VERSION,
    AddResult,
    Durability,
    Entry,
    Key,
    SchemaError,
    StoredReading,
    classify,
    decode_value,
    result_of,
)

_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    sensor TEXT NOT NULL,
    producer TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL,
    ts REAL,
    value TEXT,  -- JSON
    received_at REAL,
    PRIMARY KEY (sensor, producer, seq)
)
"""

# Version 1 had no producer: its readings become the anonymous producer's. One
# transaction, so a crash halfway leaves the old table as it was.
_MIGRATE_FROM_1 = (
    _TABLE.format(name="readings_v2"),
    "INSERT INTO readings_v2 (sensor, producer, seq, ts, value, received_at) "
    "SELECT sensor, '', seq, ts, value, received_at FROM readings",
    "DROP TABLE readings",
    "ALTER TABLE readings_v2 RENAME TO readings",
)

# What is stored already under the keys of the batch. Run inside BEGIN IMMEDIATE, which
# holds the write lock, so nobody can store one of them between this and the INSERT: the
# answer is exact. One JSON parameter instead of three placeholders per key keeps clear of
# SQLite's bound-variable limit.
_EXISTING = """
SELECT r.sensor, r.producer, r.seq, r.ts, r.value
FROM json_each(?) AS j
JOIN readings AS r
    ON r.sensor = json_extract(j.value, '$[0]')
    AND r.producer = json_extract(j.value, '$[1]')
    AND r.seq = json_extract(j.value, '$[2]')
"""

_INSERT = (
    "INSERT INTO readings (sensor, producer, seq, ts, value, received_at) VALUES (?, ?, ?, ?, ?, ?)"
)

#: How long a write waits for another process holding the lock before it fails.
_BUSY_TIMEOUT_MS = 5000


class SQLiteRepository:
    """Readings in one SQLite file, one transaction per ``add_many``."""

    def __init__(self, db: aiosqlite.Connection, path: str, migrated_from: int | None) -> None:
        self._db = db
        self.path = path
        #: The schema version the file had when opened, if it was migrated.
        self.migrated_from = migrated_from
        # One connection: a transaction spans several awaits, so calls must not interleave.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, durability: Durability = "normal") -> SQLiteRepository:
        """Open (creating if missing) the database file at ``path``, migrating an older one.

        ``normal`` durability is ``synchronous=NORMAL``, which SQLite recommends with WAL:
        a commit survives a crash of the process, a power loss may take back the last ones
        (never corrupting the file); ``full`` is ``synchronous=FULL``, an fsync per commit.

        Raises:
            SchemaError: the file was written by a newer forkwire.
        """
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: the sqlite3 module must not open transactions behind our back;
        # add_many opens its own with BEGIN IMMEDIATE.
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute(f"PRAGMA synchronous={durability.upper()}")
            await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            migrated_from = await _bring_up_to_date(db, path)
        except BaseException:
            await db.close()
            raise
        return cls(db, path, migrated_from)

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Insert the new keys in one transaction; count duplicates and conflicts."""
        if not entries:
            return result_of(0, (), ())
        keys = json.dumps([[e.sensor, e.producer, e.seq] for e in entries])
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                existing = await self._db.execute_fetchall(_EXISTING, (keys,))
                stored: dict[Key, tuple[float, str]] = {
                    (sensor, producer, seq): (ts, value)
                    for sensor, producer, seq, ts, value in existing
                }
                fresh, duplicates, conflicts = classify(entries, stored)
                await self._db.executemany(_INSERT, [(*entry, received_at) for entry in fresh])
                await self._db.execute("COMMIT")
            except BaseException:
                # Keep the original error: a failed COMMIT may have ended the transaction.
                with contextlib.suppress(sqlite3.Error):
                    await self._db.execute("ROLLBACK")
                raise
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
        clauses: list[str] = []
        params: list[object] = []
        if sensors is not None:
            clauses.append("sensor IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(sensors)))
        if producer is not None:
            clauses.append("producer = ?")
            params.append(producer)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if from_seq is not None:
            clauses.append("seq >= ?")
            params.append(from_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT sensor, producer, seq, ts, value, received_at FROM readings "
            f"{where} ORDER BY sensor, producer, seq"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        async with self._lock:
            rows = await self._db.execute_fetchall(sql, params)
        return [
            StoredReading(sensor, seq, ts, decode_value(value), received_at, producer)
            for sensor, producer, seq, ts, value, received_at in rows
        ]

    async def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL on the last close)."""
        await self._db.close()


async def _bring_up_to_date(db: aiosqlite.Connection, path: str) -> int | None:
    """Create the table, or migrate an older one; return the version migrated from."""
    (version,) = await (await db.execute("PRAGMA user_version")).fetchone() or (0,)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path} holds schema version {version}, newer than this forkwire's "
            f"{SCHEMA_VERSION}: use the forkwire that wrote it, or another store"
        )
    if version == SCHEMA_VERSION:
        return None
    columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(readings)")}
    await db.execute("BEGIN IMMEDIATE")
    try:
        if columns and "producer" not in columns:
            for statement in _MIGRATE_FROM_1:
                await db.execute(statement)
        else:
            await db.execute(_TABLE.format(name="readings"))
        await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await db.execute("ROLLBACK")
        raise
    return 1 if columns and "producer" not in columns else None


async def connect(url: str, durability: Durability = "normal") -> SQLiteRepository:
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
    return await SQLiteRepository.open(path, durability)
