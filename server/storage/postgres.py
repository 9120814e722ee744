"""``postgresql://user@host:port/db`` (or ``postgres://``): the shared store (asyncpg).

Several servers behind a load balancer point at one database; the primary key makes a
reading resent to another server a duplicate there too.

The URL takes one option of ours, ``?schema=NAME``: the schema that holds ``readings``,
created if missing and put first on the ``search_path``. It lets deployments (and tests)
share a database without sharing a table. Every other query option goes to asyncpg, which
passes unknown ones to the server as settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from forkwire.protocol.messages import Reading
from forkwire.server.storage.base import (
    AddResult,
    StoredReading,
    decode_value,
    encode_value,
    result_of,
    split_duplicates,
)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_TABLE = """
CREATE TABLE IF NOT EXISTS readings (
    sensor TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts DOUBLE PRECISION,
    value TEXT,  -- JSON
    received_at DOUBLE PRECISION,
    PRIMARY KEY (sensor, seq)
)
"""

# One statement, so one transaction, per batch: the arrays are unnested into rows, the
# INSERT ... ON CONFLICT DO NOTHING stores the new keys, and the outer SELECT answers
# with the keys that were NOT inserted, i.e. the duplicates. The plain INSERT's status
# ("INSERT 0 N") gives only the count; the group-commit writer needs to know which keys,
# to give each merged submission its own count. The answer is usually empty, so this costs
# no more round trips or bytes than the status would.
_ADD = """
WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::text[])
        AS b(sensor, seq, ts, value)
), inserted AS (
    INSERT INTO readings (sensor, seq, ts, value, received_at)
    SELECT sensor, seq, ts, value, $5::float8 FROM batch
    ON CONFLICT (sensor, seq) DO NOTHING
    RETURNING sensor, seq
)
SELECT sensor, seq FROM batch
EXCEPT ALL
SELECT sensor, seq FROM inserted
"""

#: Serializes CREATE SCHEMA/TABLE IF NOT EXISTS across servers starting at once: without
#: it two of them can race on the catalog and one fails with a unique violation.
_DDL_LOCK = 0x666F726B77697265  # "forkwire"


class PostgresRepository:
    """Readings in a PostgreSQL table, one statement (one transaction) per ``add_many``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, schema: str | None = None) -> PostgresRepository:
        """Connect a small pool and create the schema and table if missing."""
        settings = {"search_path": schema} if schema else None
        # Small: there is one writer per server; the rest is the odd analytics query.
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, server_settings=settings)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK)
                if schema:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                await conn.execute(_TABLE)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        """Insert the batch in one statement; existing keys are ignored and counted."""
        unique, duplicates = split_duplicates(readings)
        if not unique:
            return result_of(len(readings), duplicates)
        rows = await self._pool.fetch(
            _ADD,
            [r.sensor for r in unique],
            [r.seq for r in unique],
            [float(r.ts) for r in unique],
            [encode_value(r.value) for r in unique],
            received_at,
        )
        duplicates.extend((row["sensor"], row["seq"]) for row in rows)
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
        clauses: list[str] = []
        params: list[object] = []
        if sensors is not None:
            params.append(list(sensors))
            clauses.append(f"sensor = ANY(${len(params)}::text[])")
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
            "SELECT sensor, seq, ts, value, received_at FROM readings "
            f'{where} ORDER BY sensor COLLATE "C", seq'
            + ("" if limit is None else f" LIMIT ${len(params)}::int8")
        )
        rows = await self._pool.fetch(sql, *params)
        return [
            StoredReading(
                row["sensor"], row["seq"], row["ts"], decode_value(row["value"]), row["received_at"]
            )
            for row in rows
        ]

    async def close(self) -> None:
        """Close the pool, letting a running statement finish."""
        await self._pool.close()


async def connect(url: str) -> PostgresRepository:
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
    return await PostgresRepository.open(dsn, schema)
