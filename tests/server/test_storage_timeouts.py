"""Storage calls are bounded in time: a commit that waits past the timeout fails its batch."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import asyncpg
import pytest
from fwtest import POSTGRES_URL, postgres_schema

from forkwire.server.storage import Entry, open_repository


@pytest.mark.postgres
async def test_a_postgresql_commit_that_waits_past_the_timeout_fails() -> None:
    async with postgres_schema() as url:
        repo = await open_repository(url, storage_timeout=0.5)
        schema = url.rsplit("schema=", 1)[1]
        blocker = await asyncpg.connect(POSTGRES_URL, timeout=3)
        try:
            async with blocker.transaction():
                await blocker.execute(f'LOCK TABLE "{schema}".readings IN ACCESS EXCLUSIVE MODE')
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await repo.add_many([Entry("s", "", 0, 1.0, "1")], 1.0)
                assert time.monotonic() - started < 5
            # The lock gone, the store takes the batch.
            result = await repo.add_many([Entry("s", "", 0, 1.0, "1")], 1.0)
            assert result.stored == 1
        finally:
            await blocker.close()
            await repo.close()


async def test_a_sqlite_commit_waits_the_timeout_for_a_lock_then_fails(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    repo = await open_repository(f"sqlite:///{path}", storage_timeout=0.3)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await repo.add_many([Entry("s", "", 0, 1.0, "1")], 1.0)
        assert time.monotonic() - started < 5
        other.execute("ROLLBACK")
        assert (await repo.add_many([Entry("s", "", 0, 1.0, "1")], 1.0)).stored == 1
    finally:
        other.close()
        await repo.close()
