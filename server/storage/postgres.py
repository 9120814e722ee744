"""``postgresql://user@host:port/db`` (or ``postgres://``): the shared store (asyncpg).

Several servers behind a load balancer point at one database; the primary key makes a
reading resent to another server a duplicate there too.

The URL takes one option of ours, ``?schema=NAME``: the schema that holds ``readings``,
created if missing and put first on the ``search_path``. It lets deployments (and tests)
share a database without sharing a table. Every other query option goes to asyncpg, which
passes unknown ones to the server as settings.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import numpy as np

from forkwire.server.storage.base import (
    SCHEMA_VERSION,
    AddResult,
    Durability,
    Entry,
    SchemaError,
    StoredReading,
    StreamColumns,
    classify,
    decode_values,
    result_of,
)

#: Seconds a connection or a statement may take, unless told otherwise.
_TIMEOUT = 10.0

#: Query answers of up to this many rows are decoded on the event loop.
_INLINE_ROWS = 64

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_TABLE = """
CREATE TABLE IF NOT EXISTS readings (
    sensor TEXT NOT NULL,
    producer TEXT NOT NULL DEFAULT '',
    seq BIGINT NOT NULL,
    ts DOUBLE PRECISION,
    value TEXT,  -- JSON
    received_at DOUBLE PRECISION,
    PRIMARY KEY (sensor, producer, seq)
)
"""

#: The schema version lives in a table of its own, one row per setting.
_META = "CREATE TABLE IF NOT EXISTS forkwire_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
_SET_VERSION = (
    "INSERT INTO forkwire_meta (name, value) VALUES ('schema_version', $1) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)

# Version 1 had no producer: its readings become the anonymous producer's.
_MIGRATE_FROM_1 = (
    "ALTER TABLE readings ADD COLUMN producer TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE readings DROP CONSTRAINT readings_pkey",
    "ALTER TABLE readings ADD PRIMARY KEY (sensor, producer, seq)",
)

# One statement, so one transaction, per batch: the arrays are unnested into rows, the
# INSERT ... ON CONFLICT DO NOTHING stores the new keys, and the outer SELECT answers
# with what is stored under the keys that were NOT inserted, so that each can be told a
# duplicate (same ts and value) or a conflict. The answer is usually empty, so this costs
# no more round trips or bytes than the insert's status would.
_ADD = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::text[])
        AS b(sensor, producer, seq, ts, value)
), inserted AS (
    INSERT INTO readings (sensor, producer, seq, ts, value, received_at)
    SELECT sensor, producer, seq, ts, value, $6::float8 FROM batch
    ON CONFLICT (sensor, producer, seq) DO NOTHING
    RETURNING sensor, producer, seq
), refused AS (
    SELECT sensor, producer, seq FROM batch
    EXCEPT
    SELECT sensor, producer, seq FROM inserted
)
SELECT r.sensor, r.producer, r.seq, r.ts, r.value
FROM refused JOIN readings AS r USING (sensor, producer, seq)
"""

#: Serializes CREATE SCHEMA/TABLE IF NOT EXISTS and migrations across servers starting at
#: once: without it two of them can race on the catalog and one fails.
_DDL_LOCK = 0x666F726B77697265  # "forkwire"


class PostgresRepository:
    """Readings in a PostgreSQL table, one statement (one transaction) per ``add_many``."""

    def __init__(
        self, pool: asyncpg.Pool, migrated_from: int | None, timeout: float = _TIMEOUT
    ) -> None:
        self._pool = pool
        self._timeout = timeout
        #: The schema version the store had when opened, if it was migrated.
        self.migrated_from = migrated_from

    @classmethod
    async def open(
        cls,
        dsn: str,
        schema: str | None = None,
        durability: Durability = "normal",
        *,
        storage_timeout: float = _TIMEOUT,
        where: str = "PostgreSQL",
    ) -> PostgresRepository:
        """Connect a small pool; create the schema and table, or migrate an older table.

        ``normal`` durability is ``synchronous_commit=off``: a commit survives a crash of
        this server, and a crash of PostgreSQL may take back the last fraction of a second
        of commits (never corrupting anything); ``full`` waits for the WAL flush.

        ``storage_timeout`` bounds the connection (each of the pool's) and every statement
        (``command_timeout``): a database that stops answering fails a commit after it,
        instead of holding the writer, the acks and the shutdown forever.

        Raises:
            SchemaError: the store was written by a newer forkwire.
            TimeoutError: ``where`` did not answer within ``storage_timeout`` seconds.
        """
        settings = {"synchronous_commit": "on" if durability == "full" else "off"}
        if schema:
            settings["search_path"] = schema
        try:
            # The whole opening too: asyncpg's connect timeout does not cover every step
            # (a server that accepts TCP and then says nothing, or a DDL lock held).
            async with asyncio.timeout(storage_timeout):
                # Small: there is one writer per server; the rest is the odd analytics query.
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=1,
                    max_size=4,
                    server_settings=settings,
                    timeout=storage_timeout,
                    command_timeout=storage_timeout,
                )
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                        if schema:
                            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                        migrated_from = await _bring_up_to_date(conn)
                except BaseException:
                    pool.terminate()
                    raise
        except TimeoutError:
            raise TimeoutError(
                f"{where} did not answer within {storage_timeout:g} s (--storage-timeout)"
            ) from None
        return cls(pool, migrated_from, storage_timeout)

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult:
        """Insert the new keys in one statement; count duplicates and conflicts."""
        if not entries:
            return result_of(0, (), ())
        # Dedupe within the batch first: ON CONFLICT cannot touch one key twice in a
        # statement, and a repeat in the batch is judged against its first copy.
        unique, repeated, repeated_conflicts = classify(entries, {})
        rows = await self._pool.fetch(
            _ADD,
            [e.sensor for e in unique],
            [e.producer for e in unique],
            [e.seq for e in unique],
            [e.ts for e in unique],
            [e.value for e in unique],
            received_at,
        )
        stored = {(r["sensor"], r["producer"], r["seq"]): (r["ts"], r["value"]) for r in rows}
        _, duplicates, conflicts = classify([e for e in unique if e.key in stored], stored)
        return result_of(
            len(unique) - len(stored), [*repeated, *duplicates], [*repeated_conflicts, *conflicts]
        )

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
            params.append(list(sensors))
            clauses.append(f"sensor = ANY(${len(params)}::text[])")
        if producer is not None:
            params.append(producer)
            clauses.append(f"producer = ${len(params)}::text")
        if since is not None:
            params.append(since)
            clauses.append(f"ts >= ${len(params)}::float8")
        if from_seq is not None:
            params.append(from_seq)
            clauses.append(f"seq >= ${len(params)}::int8")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        if limit is not None:
            params.append(limit)
        # COLLATE "C": byte order, the order SQLite, the CSV and memory backends give, not
        # the database locale's (which may put "b" before "B10").
        sql = (
            "SELECT sensor, producer, seq, ts, value, received_at FROM readings "
            f'{where} ORDER BY sensor COLLATE "C", producer COLLATE "C", seq'
            + ("" if limit is None else f" LIMIT ${len(params)}::int8")
        )
        rows = await self._pool.fetch(sql, *params)
        if len(rows) <= _INLINE_ROWS:
            return _decode(rows)
        # Decoding a whole store's JSON takes seconds: off the event loop.
        return await asyncio.to_thread(_decode, rows)

    async def stream_columns(
        self, sensors: Sequence[str] | None, since: float | None, *, max_sensors: int
    ) -> tuple[list[StreamColumns], int]:
        """Every (sensor, producer) stream as columns, of the first ``max_sensors`` sensors
        by name, and how many sensors are beyond them; ``sensors`` and ``since`` filter as in
        :meth:`query`. One snapshot (a repeatable-read transaction); the rows of each stream
        become arrays in a worker thread."""
        # Parameters: $1 the sensors, $2 since (when given).
        since_clause = "" if since is None else " AND ts >= $2::float8"
        extra: list[object] = [] if since is None else [since]
        wanted = (
            " WHERE sensor = ANY($1::text[])"
            if sensors is not None
            else " WHERE $1::text[] IS NULL"
        )
        columns: list[StreamColumns] = []
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            names = [
                row[0]
                for row in await conn.fetch(
                    "SELECT sensor FROM readings"
                    + wanted
                    + since_clause
                    + ' GROUP BY sensor ORDER BY sensor COLLATE "C"',
                    None if sensors is None else list(sensors),
                    *extra,
                )
            ]
            kept = names[:max_sensors]
            pairs = await conn.fetch(
                "SELECT sensor, producer FROM readings WHERE sensor = ANY($1::text[])"
                + since_clause
                + ' GROUP BY sensor, producer ORDER BY sensor COLLATE "C", producer COLLATE "C"',
                kept,
                *extra,
            )
            stream = "SELECT seq, ts, value FROM readings WHERE sensor = $1 AND producer = $2"
            for sensor, producer in pairs:
                if since is None:
                    rows = await conn.fetch(stream + " ORDER BY seq", sensor, producer)
                else:
                    rows = await conn.fetch(
                        stream + " AND ts >= $3::float8 ORDER BY seq", sensor, producer, since
                    )
                columns.append(await asyncio.to_thread(_as_columns, sensor, producer, rows))
        return columns, len(names) - len(kept)

    async def close(self) -> None:
        """Close the pool, letting a running statement finish within the timeout; a
        database that does not answer is cut off after it (a shutdown must end)."""
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except TimeoutError:
            self._pool.terminate()


def _decode(rows: Sequence[asyncpg.Record]) -> list[StoredReading]:
    values = decode_values([row["value"] for row in rows])
    return [
        StoredReading(
            row["sensor"], row["seq"], row["ts"], value, row["received_at"], row["producer"]
        )
        for row, value in zip(rows, values, strict=True)
    ]


def _as_columns(sensor: str, producer: str, rows: Sequence[asyncpg.Record]) -> StreamColumns:
    n = len(rows)
    return StreamColumns(
        sensor,
        producer,
        np.fromiter((row[0] for row in rows), dtype=np.int64, count=n),
        np.fromiter(
            (np.nan if row[1] is None else row[1] for row in rows), dtype=np.float64, count=n
        ),
        decode_values([row[2] for row in rows]),
    )


async def _bring_up_to_date(conn: asyncpg.Connection) -> int | None:
    """Create the table, or migrate an older one; return the version migrated from."""
    await conn.execute(_META)
    text = await conn.fetchval("SELECT value FROM forkwire_meta WHERE name = 'schema_version'")
    version = int(text) if text is not None else None
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaError(
            f"the store holds schema version {version}, newer than this forkwire's "
            f"{SCHEMA_VERSION}: use the forkwire that wrote it, or another schema"
        )
    migrated_from = None
    if version is None:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'readings'"
        )
        if columns and "producer" not in {row["column_name"] for row in columns}:
            for statement in _MIGRATE_FROM_1:
                await conn.execute(statement)
            migrated_from = 1
    await conn.execute(_TABLE)
    await conn.execute(_SET_VERSION, str(SCHEMA_VERSION))
    return migrated_from


async def connect(
    url: str, durability: Durability = "normal", *, storage_timeout: float = _TIMEOUT
) -> PostgresRepository:
    """Open a ``postgresql://`` or ``postgres://`` URL; ``?schema=NAME`` picks the schema."""
    parts = urlsplit(url)
    options = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in options if name == "schema"]
    rest = [(name, value) for name, value in options if name != "schema"]
    schema = schemas[-1] if schemas else None
    if schema is not None and not _SCHEMA_NAME.match(schema):
        # It is spliced into DDL, so it keeps to plain lower-case identifiers.
        raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}, got {schema!r}")
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    # Named by host and port only: the URL may hold a password.
    where = f"PostgreSQL at {parts.hostname or 'localhost'}:{parts.port or 5432}"
    return await PostgresRepository.open(
        dsn, schema, durability, storage_timeout=storage_timeout, where=where
    )
