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
from typing import Any
from urllib.parse import urlsplit

import aiosqlite
import numpy as np
import structlog

from forkwire.server.storage.base import (
    SCHEMA_VERSION,
    AddResult,
    Durability,
    Entry,
    Key,
    SchemaError,
    StoredReading,
    StreamColumns,
    classify,
    decode_values,
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

# What is stored under keys an INSERT did not take. One JSON parameter instead of three
# placeholders per key keeps clear of SQLite's bound-variable limit.
_EXISTING = """
SELECT r.sensor, r.producer, r.seq, r.ts, r.value
FROM json_each(?) AS j
JOIN readings AS r
    ON r.sensor = json_extract(j.value, '$[0]')
    AND r.producer = json_extract(j.value, '$[1]')
    AND r.seq = json_extract(j.value, '$[2]')
"""

_INSERT_HEAD = "INSERT INTO readings (sensor, producer, seq, ts, value, received_at) VALUES "
_ROW = "(?,?,?,?,?,?)"
_INSERT_TAIL = " ON CONFLICT DO NOTHING RETURNING sensor, producer, seq"
#: SQLite allows 32,766 bound parameters a statement (since 3.32); six a row.
_ROWS_PER_STATEMENT = 5000
#: Commits of up to this many readings run on the event loop (about 60 µs for five).
_INLINE_ROWS = 64

#: How long a write waits for another process holding the lock before it fails, unless
#: told otherwise (``--storage-timeout``): then the batch fails, storage_unavailable.
_BUSY_TIMEOUT = 10.0

#: Commits between two checkpoints of the write-ahead log (a few pages each: about what
#: SQLite's own 1,000-page trigger would do).
_CHECKPOINT_COMMITS = 300

log = structlog.get_logger("forkwire.storage")


class SQLiteRepository:
    """Readings in one SQLite file, one transaction per ``add_many``.

    Writes go through a plain ``sqlite3`` connection of their own, reads through
    aiosqlite. A commit of a few readings without fsync (the common case: a fleet with
    five frames in flight) runs on the event loop: it takes about 60 µs here, against 220
    µs through a thread, whose two wake-ups cost more than the write. A larger batch, or
    any commit with ``full`` durability (an fsync), runs in a worker thread so the loop
    never waits on the disk.

    The write-ahead log is checkpointed in the reader's thread, not by the committing
    writer: SQLite's automatic checkpoint runs inside a commit and syncs the database
    file, a 10-20 ms stall of the loop every thousand pages here.
    """

    def __init__(
        self,
        reader: aiosqlite.Connection,
        writer: sqlite3.Connection,
        path: str,
        durability: Durability,
        migrated_from: int | None,
        busy_ms: int = round(_BUSY_TIMEOUT * 1000),
    ) -> None:
        self._db = reader
        self._writer = writer
        self._busy_ms = busy_ms
        self._commits = 0  # since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        self.path = path
        self._inline_rows = _INLINE_ROWS if durability == "normal" else 0
        #: The schema version the file had when opened, if it was migrated.
        self.migrated_from = migrated_from
        # Writes must not interleave (a large one spans a transaction in a thread).
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: str, durability: Durability = "normal", *, storage_timeout: float = _BUSY_TIMEOUT
    ) -> SQLiteRepository:
        """Open (creating if missing) the database file at ``path``, migrating an older one.

        ``normal`` durability is ``synchronous=NORMAL``, which SQLite recommends with WAL:
        a commit survives a crash of the process, a power loss may take back the last ones
        (never corrupting the file); ``full`` is ``synchronous=FULL``, an fsync per commit.

        Raises:
            SchemaError: the file was written by a newer forkwire.
        """
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = max(1, round(storage_timeout * 1000))
        # isolation_level=None: the sqlite3 module must not open transactions behind our
        # back; a statement is its own transaction unless we open one with BEGIN.
        reader = await aiosqlite.connect(path, isolation_level=None)
        try:
            await reader.execute("PRAGMA journal_mode=WAL")
            await reader.execute(f"PRAGMA busy_timeout={busy_ms}")
            migrated_from = await _bring_up_to_date(reader, path)
            # check_same_thread=False: used from the loop and from a worker thread, never
            # at once (the repository's lock).
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            writer.execute(f"PRAGMA synchronous={durability.upper()}")
            writer.execute(f"PRAGMA busy_timeout={busy_ms}")
            writer.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            await reader.close()
            raise
        return cls(reader, writer, path, durability, migrated_from, busy_ms)

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Insert the new keys; count duplicates and conflicts.

        One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` statement is one transaction;
        only the keys it did not insert (rare: resends) are looked up afterwards to tell a
        duplicate from a conflict. Stored rows never change, so that lookup needs no lock.
        A batch too large for one statement's parameters takes a transaction around several.
        """
        if not entries:
            return result_of(0, (), ())
        unique, repeated, clashing = classify(entries, {})
        async with self._lock:
            if len(unique) <= self._inline_rows:
                refused, stored = self._write(unique, received_at)
            else:
                refused, stored = await asyncio.to_thread(self._write, unique, received_at)
        self._commits += 1
        if self._commits >= _CHECKPOINT_COMMITS and self._checkpoint is None:
            self._commits = 0
            self._checkpoint = asyncio.create_task(self._checkpoint_wal())
        _, duplicates, conflicts = classify(refused, stored)
        return result_of(
            len(unique) - len(refused), [*repeated, *duplicates], [*clashing, *conflicts]
        )

    def _write(
        self, entries: Sequence[Entry], received_at: float
    ) -> tuple[list[Entry], dict[Key, tuple[float, str]]]:
        """Insert; return the entries not inserted and what is stored under their keys."""
        if len(entries) <= _ROWS_PER_STATEMENT:
            inserted = self._insert(entries, received_at)
        else:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                inserted = set()
                for start in range(0, len(entries), _ROWS_PER_STATEMENT):
                    inserted |= self._insert(
                        entries[start : start + _ROWS_PER_STATEMENT], received_at
                    )
                self._writer.execute("COMMIT")
            except BaseException:
                # Keep the original error: a failed COMMIT may have ended the transaction.
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")
                raise
        refused = [e for e in entries if e.key not in inserted]
        stored: dict[Key, tuple[float, str]] = {}
        if refused:
            keys = json.dumps([[e.sensor, e.producer, e.seq] for e in refused])
            for sensor, producer, seq, ts, value in self._writer.execute(_EXISTING, (keys,)):
                stored[(sensor, producer, seq)] = (ts, value)
        return refused, stored

    def _insert(self, entries: Sequence[Entry], received_at: float) -> set[Key]:
        sql = _INSERT_HEAD + ",".join([_ROW] * len(entries)) + _INSERT_TAIL
        params = [field for entry in entries for field in (*entry, received_at)]
        return {
            (sensor, producer, seq)
            for sensor, producer, seq in self._writer.execute(sql, params).fetchall()
        }

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
        clauses, params = _filters(sensors, since)
        if producer is not None:
            clauses.append("producer = ?")
            params.append(producer)
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
            rows = list(await self._db.execute_fetchall(sql, params))
        if len(rows) <= _INLINE_ROWS:
            return _decode(rows)
        # Decoding a whole store's JSON takes seconds: off the loop, and outside the lock
        # so that commits go on meanwhile.
        return await asyncio.to_thread(_decode, rows)

    async def stream_columns(
        self, sensors: Sequence[str] | None, since: float | None, *, max_sensors: int
    ) -> tuple[list[StreamColumns], int]:
        """Every (sensor, producer) stream as columns, of the first ``max_sensors`` sensors
        by name, and how many sensors are beyond them; ``sensors`` and ``since`` filter as in
        :meth:`query`.

        Read in a worker thread through a read-only connection of its own (WAL lets it read
        while the writer commits), so neither the event loop nor the commits wait for it.
        """
        return await asyncio.to_thread(
            _read_columns, self.path, self._busy_ms, sensors, since, max_sensors
        )

    async def _checkpoint_wal(self) -> None:
        # The first pass copies the log into the file while commits go on; the second,
        # with commits held back, copies the few frames added meanwhile, so the next commit
        # finds the whole log copied and starts it over instead of growing it.
        try:
            await self._checkpoint_pass()
            async with self._lock:
                await self._checkpoint_pass()
        except sqlite3.Error as exc:
            log.warning("checkpoint failed", path=self.path, error=str(exc))
        finally:
            self._checkpoint = None

    async def _checkpoint_pass(self) -> None:
        async with self._db.execute("PRAGMA wal_checkpoint(PASSIVE)") as cursor:
            await cursor.fetchall()

    async def close(self) -> None:
        """Close both connections (SQLite checkpoints the WAL on the last close)."""
        if self._checkpoint is not None:
            await self._checkpoint
        async with self._lock:
            self._writer.close()
        await self._db.close()


def _read_columns(
    path: str, busy_ms: int, sensors: Sequence[str] | None, since: float | None, max_sensors: int
) -> tuple[list[StreamColumns], int]:
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        db.execute(f"PRAGMA busy_timeout={busy_ms}")
        # One transaction: the streams listed and the rows read are of one snapshot.
        db.execute("BEGIN")
        clauses, params = _filters(sensors, since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        names = [
            name
            for (name,) in db.execute(
                f"SELECT DISTINCT sensor FROM readings {where} ORDER BY sensor", params
            )
        ]
        kept = names[:max_sensors]
        columns: list[StreamColumns] = []
        for name in kept:
            producers = [
                p
                for (p,) in db.execute(
                    f"SELECT DISTINCT producer FROM readings WHERE sensor = ? "
                    f"{'AND ts >= ?' if since is not None else ''} ORDER BY producer",
                    [name] if since is None else [name, since],
                )
            ]
            for producer in producers:
                rows = db.execute(
                    "SELECT seq, ts, value FROM readings WHERE sensor = ? AND producer = ? "
                    f"{'AND ts >= ?' if since is not None else ''} ORDER BY seq",
                    [name, producer] if since is None else [name, producer, since],
                ).fetchall()
                n = len(rows)
                columns.append(
                    StreamColumns(
                        name,
                        producer,
                        np.fromiter((r[0] for r in rows), dtype=np.int64, count=n),
                        np.fromiter(
                            (np.nan if r[1] is None else r[1] for r in rows),
                            dtype=np.float64,
                            count=n,
                        ),
                        decode_values([r[2] for r in rows]),
                    )
                )
                del rows
        db.execute("COMMIT")
        return columns, len(names) - len(kept)
    finally:
        db.close()


def _filters(sensors: Sequence[str] | None, since: float | None) -> tuple[list[str], list[object]]:
    """The WHERE clauses (joined by AND) and their parameters that pick ``sensors`` and
    readings from ``since`` on; shared by the paged query and the report's columns."""
    clauses: list[str] = []
    params: list[object] = []
    if sensors is not None:
        clauses.append("sensor IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(list(sensors)))
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    return clauses, params


def _decode(rows: Sequence[Any]) -> list[StoredReading]:
    values = decode_values([row[4] for row in rows])
    return [
        StoredReading(sensor, seq, ts, value, received_at, producer)
        for (sensor, producer, seq, ts, _, received_at), value in zip(rows, values, strict=True)
    ]


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


async def connect(
    url: str, durability: Durability = "normal", *, storage_timeout: float = _BUSY_TIMEOUT
) -> SQLiteRepository:
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
    return await SQLiteRepository.open(path, durability, storage_timeout=storage_timeout)
