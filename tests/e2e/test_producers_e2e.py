"""Producers end to end: real servers on SQLite and PostgreSQL, real fleets from the CLI.

The promise is "acked means stored exactly once": a fresh outbox reusing sensor names is
a new producer and stored in full, two fleets at once both store in full, a restart on the
same outbox dedups exactly, and a value conflicting with what is stored is refused.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fwtest import REPO, postgres_schema

from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.protocol import Ack, Error, ErrorCode, Reading, ReadingsMsg
from forkwire.server.storage import open_repository


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh store of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        async with postgres_schema() as url:
            yield url


@pytest.fixture
async def server(store: str) -> AsyncIterator[LocalServer]:
    """A server on that store (overrides the SQLite-only one of conftest)."""
    running = await LocalServer.start("--no-udp", "--db", store)
    try:
        yield running
    finally:
        await running.stop()


async def fleet(port: int, outbox: Path, seconds: float = 1.0) -> dict[str, Any]:
    """``forkwire sensors`` as a user runs it; its JSON summary."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "forkwire", "--log-level", "error", "sensors"],
        *["--count", "3", "--period", "0.005", "--duration", str(seconds)],
        *["--port", str(port), "--outbox", str(outbox), "--no-live", "--json"],
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    summary: dict[str, Any] = json.loads(out)
    return summary


async def stored_by_producer(store: str) -> Counter[str]:
    repo = await open_repository(store)
    try:
        return Counter(row.producer for row in await repo.query())
    finally:
        await repo.close()


async def test_a_fresh_outbox_reusing_names_is_stored_in_full(
    server: LocalServer, store: str, tmp_path: Path
) -> None:
    """The same three sensor names from a fresh outbox start again at seq 0, and every
    reading of both runs is stored: nothing is taken for a duplicate."""
    first = await fleet(server.port, tmp_path / "one.sqlite")
    second = await fleet(server.port, tmp_path / "two.sqlite")
    assert first["producer"] != second["producer"]
    assert first["pending"] == second["pending"] == 0
    stored = await stored_by_producer(store)
    assert stored == {first["producer"]: first["acked"], second["producer"]: second["acked"]}
    assert min(first["acked"], second["acked"]) > 100


async def test_two_fleets_with_the_same_names_at_once_both_store_in_full(
    server: LocalServer, store: str, tmp_path: Path
) -> None:
    """Two processes with the default names at the same time: both stored whole."""
    one, two = await asyncio.gather(
        fleet(server.port, tmp_path / "a.sqlite"), fleet(server.port, tmp_path / "b.sqlite")
    )
    stored = await stored_by_producer(store)
    assert stored == {one["producer"]: one["acked"], two["producer"]: two["acked"]}
    assert one["pending"] == two["pending"] == 0


async def test_a_restart_on_the_same_outbox_continues_and_dedups(
    server: LocalServer, store: str, tmp_path: Path
) -> None:
    """The same outbox is the same producer: its seqs go on, nothing is stored twice."""
    outbox = tmp_path / "same.sqlite"
    first = await fleet(server.port, outbox, 0.5)
    second = await fleet(server.port, outbox, 0.5)
    assert first["producer"] == second["producer"]
    repo = await open_repository(store)
    try:
        rows = await repo.query(sensors=["sensor-0"])
    finally:
        await repo.close()
    seqs = [row.seq for row in rows]
    assert seqs == list(range(len(seqs)))  # one stream, no gap, no repeat
    assert sum((await stored_by_producer(store)).values()) == first["acked"] + second["acked"]


async def test_a_conflicting_value_is_refused_and_the_first_kept(
    server: LocalServer, store: str
) -> None:
    """A resend with the same payload is a duplicate; with another value, a conflict."""
    reading = Reading(sensor="s", seq=7, ts=1.5, value=1)
    connection = await Connection.open("127.0.0.1", server.port)
    async with connection:
        first = await connection.request(ReadingsMsg(producer="p", items=[reading]))
        again = await connection.request(ReadingsMsg(producer="p", items=[reading]))
        changed = reading.model_copy(update={"value": 2})
        refused = await connection.request(ReadingsMsg(producer="p", items=[changed]))
        other = await connection.request(ReadingsMsg(producer="q", items=[changed]))
    assert first == Ack(acked={"s": [(7, 7)]})
    assert again == Ack(acked={"s": [(7, 7)]}, duplicates=1)
    assert isinstance(refused, Error)
    assert (refused.code, refused.keys) == (ErrorCode.CONFLICT, {"s": [(7, 7)]})
    assert other == Ack(acked={"s": [(7, 7)]})  # another producer's seq 7 is its own
    repo = await open_repository(store)
    try:
        assert sorted((r.producer, r.value) for r in await repo.query()) == [("p", 1), ("q", 2)]
    finally:
        await repo.close()
