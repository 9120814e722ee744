"""The storage backends, all held to one contract through the parametrized ``repo`` fixture.

PostgreSQL isolation: every test gets a fresh schema (``?schema=fw_test_<hex>``, created by
the repository, dropped with CASCADE afterwards) in database ``test`` at 127.0.0.1:5432, so
tests never see each other's rows. If the server is unreachable the postgres cases skip,
unless ``FORKWIRE_REQUIRE_POSTGRES=1`` makes that a failure (CI with a database).
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fwtest import POSTGRES_URL, postgres_schema, require_postgres

from forkwire.server.storage import (
    AddResult,
    Durability,
    Repository,
    SchemaError,
    StoredReading,
    open_repository,
    open_sink,
)
from forkwire.server.storage.base import Entry, encode_value
from forkwire.server.storage.memory import MemoryRepository
from forkwire.server.storage.screen import ScreenSink

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["memory", "sqlite", "csv", pytest.param("postgres", marks=pytest.mark.postgres)]
PERSISTENT = ["sqlite", "csv", pytest.param("postgres", marks=pytest.mark.postgres)]


def reading(sensor: str, seq: int, ts: float = 0.0, value: Any = 1.0, producer: str = "") -> Entry:
    return Entry(sensor, producer, seq, float(ts), encode_value(value))


@pytest.fixture(params=BACKENDS)
async def repo_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A storage URL of the backend named by the parameter, isolated to this test."""
    kind: str = request.param
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'readings.sqlite'}"
    elif kind == "csv":
        yield f"csv:///{tmp_path / 'readings.csv'}"
    elif kind == "postgres":
        async with postgres_schema() as url:
            yield url
    else:
        raise AssertionError(kind)


@pytest.fixture
async def repo(repo_url: str) -> AsyncIterator[Repository]:
    """An open, empty repository of each backend."""
    opened = await open_repository(repo_url)
    yield opened
    await opened.close()


class FailingRepository(MemoryRepository):
    """A store whose commits fail."""

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        raise OSError("disk on fire")


VALUES: list[Any] = [
    7,
    -3,
    2**62,
    1.0,
    -0.125,
    1e-300,
    [],
    [1.0, -2.5, 3.25],
    {},
    {"t": 21.5, "ok": True, "n": None, "tags": ["a,b", 'q"uote'], "deep": {"x": [1, 2]}},
]


async def test_round_trip_of_every_value_kind(repo: Repository) -> None:
    """Every value kind comes back equal and of the same type, with ts and received_at."""
    readings = [reading("s", seq, ts=100.0 + seq, value=v) for seq, v in enumerate(VALUES)]
    result = await repo.add_many(readings, received_at=1234.5)
    assert result == AddResult(stored=len(VALUES), duplicates=0)
    rows = await repo.query()
    assert rows == [StoredReading("s", seq, 100.0 + seq, v, 1234.5) for seq, v in enumerate(VALUES)]
    for row, value in zip(rows, VALUES, strict=True):
        assert type(row.value) is type(value)
        assert type(row.seq) is int
        assert type(row.ts) is float


async def test_int_timestamp_is_stored_as_float(repo: Repository) -> None:
    """An integral ts (allowed on the wire) is stored and returned as a float."""
    await repo.add_many([reading("s", 0, ts=5)], received_at=0.0)
    [row] = await repo.query()
    assert row.ts == 5.0
    assert type(row.ts) is float


async def test_empty_batch_stores_nothing(repo: Repository) -> None:
    """add_many([]) is a no-op that reports zero."""
    assert await repo.add_many([], received_at=1.0) == AddResult(stored=0, duplicates=0)
    assert await repo.query() == []


async def test_duplicates_are_stored_once_and_counted(repo: Repository) -> None:
    """A key already stored, or repeated in the batch, with the same ts and value is not
    stored again but counted as a duplicate."""
    await repo.add_many([reading("a", 0, value=1), reading("a", 1, value=2)], received_at=1.0)
    result = await repo.add_many(
        [reading("a", 1, value=2), reading("a", 2, value=3), reading("a", 2, value=3)],
        received_at=2.0,
    )
    assert result.stored == 1
    assert result.duplicates == 2
    assert result.duplicate_keys == {("a", "", 1), ("a", "", 2)}
    assert result.conflict_keys == frozenset()
    rows = await repo.query()
    assert [(r.seq, r.value, r.received_at) for r in rows] == [
        (0, 1, 1.0),
        (1, 2, 1.0),
        (2, 3, 2.0),
    ]


async def test_another_ts_or_value_under_a_stored_key_is_a_conflict(repo: Repository) -> None:
    """Same key, other payload: refused as a conflict, never stored, never a duplicate."""
    await repo.add_many([reading("a", 0, ts=1.0, value=1)], received_at=1.0)
    result = await repo.add_many(
        [
            reading("a", 0, ts=1.0, value=2),  # another value
            reading("a", 0, ts=9.0, value=1),  # another ts
            reading("a", 1, ts=1.0, value=1.0),  # new
            reading("a", 1, ts=1.0, value=1),  # 1 is not 1.0: a conflict in the batch
        ],
        received_at=2.0,
    )
    assert (result.stored, result.duplicates) == (1, 0)
    assert result.conflict_keys == {("a", "", 0), ("a", "", 1)}
    rows = await repo.query()
    assert [(r.seq, r.value) for r in rows] == [(0, 1), (1, 1.0)]
    assert type(rows[1].value) is float


async def test_the_producer_is_part_of_the_key(repo: Repository) -> None:
    """Two producers' seq 0 of one sensor are two readings, each stored in full."""
    first = await repo.add_many(
        [reading("s", 0, value=1, producer="p1"), reading("s", 1, value=2, producer="p1")],
        received_at=1.0,
    )
    second = await repo.add_many(
        [reading("s", 0, value=7, producer="p2"), reading("s", 0, value=9)], received_at=2.0
    )
    assert (first.stored, second.stored) == (2, 2)
    rows = await repo.query(sensors=["s"])
    assert [(r.producer, r.seq, r.value) for r in rows] == [
        ("", 0, 9),
        ("p1", 0, 1),
        ("p1", 1, 2),
        ("p2", 0, 7),
    ]
    assert [r.seq for r in await repo.query(producer="p1")] == [0, 1]


async def test_same_seq_of_other_sensors_is_not_a_duplicate(repo: Repository) -> None:
    """The key is (sensor, seq): seq 0 of two sensors is two readings."""
    result = await repo.add_many([reading("a", 0), reading("b", 0)], received_at=1.0)
    assert result == AddResult(stored=2, duplicates=0)
    assert [(r.sensor, r.seq) for r in await repo.query()] == [("a", 0), ("b", 0)]


async def test_query_orders_by_sensor_then_numeric_seq(repo: Repository) -> None:
    """Rows come back by sensor in byte order, then by seq as a number (2 before 10)."""
    keys = [("b", 10), ("a", 2), ("B10", 1), ("b", 2), ("a", 10), ("a_1", 0), ("a", 1)]
    await repo.add_many([reading(s, q) for s, q in keys], received_at=1.0)
    got = [(r.sensor, r.seq) for r in await repo.query()]
    assert got == [("B10", 1), ("a", 1), ("a", 2), ("a", 10), ("a_1", 0), ("b", 2), ("b", 10)]


async def test_query_filters_by_sensors_and_since(repo: Repository) -> None:
    """`sensors` keeps the named sensors, `since` keeps ts >= since, together they AND."""
    await repo.add_many(
        [reading(s, q, ts=float(q)) for s in ("a", "b", "c") for q in range(4)], received_at=1.0
    )

    def keys(rows: list[StoredReading]) -> list[tuple[str, int]]:
        return [(r.sensor, r.seq) for r in rows]

    assert keys(await repo.query(sensors=["c", "a"])) == [
        ("a", 0), ("a", 1), ("a", 2), ("a", 3), ("c", 0), ("c", 1), ("c", 2), ("c", 3)
    ]  # fmt: skip
    assert keys(await repo.query(since=2.0)) == [
        ("a", 2), ("a", 3), ("b", 2), ("b", 3), ("c", 2), ("c", 3)
    ]  # fmt: skip
    assert keys(await repo.query(sensors=["b"], since=3.0)) == [("b", 3)]
    assert await repo.query(sensors=[]) == []
    assert await repo.query(sensors=["nobody"]) == []
    assert await repo.query(since=4.0) == []


async def test_query_pages_by_seq_with_a_limit(repo: Repository) -> None:
    """`from_seq` keeps seq >= from_seq, `limit` caps the rows, in (sensor, seq) order."""
    await repo.add_many(
        [reading(s, q, ts=float(q)) for s in ("a", "b") for q in (1, 2, 5, 10)], received_at=1.0
    )

    def seqs(rows: list[StoredReading]) -> list[int]:
        return [r.seq for r in rows]

    assert seqs(await repo.query(sensors=["a"], from_seq=2)) == [2, 5, 10]
    assert seqs(await repo.query(sensors=["a"], from_seq=3, limit=2)) == [5, 10]
    assert seqs(await repo.query(sensors=["b"], since=2.0, from_seq=0, limit=1)) == [2]
    assert seqs(await repo.query(sensors=["a"], from_seq=11)) == []
    assert len(await repo.query(limit=3)) == 3


@pytest.mark.parametrize("repo_url", PERSISTENT, indirect=True)
async def test_data_survives_reopening(repo_url: str) -> None:
    """Closed and reopened, the store has the rows and still knows their keys."""
    first = await open_repository(repo_url)
    try:
        await first.add_many([reading("a", 0, value=[1.5]), reading("b", 1, value=2)], 10.0)
    finally:
        await first.close()
    second = await open_repository(repo_url)
    try:
        assert await second.query() == [
            StoredReading("a", 0, 0.0, [1.5], 10.0),
            StoredReading("b", 1, 0.0, 2, 10.0),
        ]
        result = await second.add_many(
            [reading("a", 0, value=[1.5]), reading("a", 1)], received_at=11.0
        )
        assert result.stored == 1
        assert result.duplicate_keys == {("a", "", 0)}
    finally:
        await second.close()


@pytest.mark.parametrize("url", ["mysql://x/y", "memory", "", "sqlite3:///x.db"])
async def test_unknown_scheme_names_the_supported_ones(url: str) -> None:
    """An unknown URL is a ValueError that lists what is supported."""
    with pytest.raises(ValueError, match=r"supported: memory://, sqlite://.*csv://$"):
        await open_repository(url)


async def test_screen_is_a_sink_not_a_store() -> None:
    """screen:// keeps nothing, so it cannot be the store: the error says what to do."""
    with pytest.raises(ValueError, match=r"cannot be the store.*--db screen://"):
        await open_repository("screen://")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "csv:///"])
async def test_a_file_store_needs_a_path(url: str) -> None:
    """sqlite:// or csv:// without a path is an error, never a silent in-memory store."""
    with pytest.raises(ValueError, match="needs a file path"):
        await open_repository(url)


async def test_unknown_scheme_error_hides_the_rest_of_the_url() -> None:
    """The error names the scheme only, so a password in a mistyped URL is not logged."""
    with pytest.raises(ValueError, match="postgress") as info:
        await open_repository("postgress://user:s3cret@db/x")
    assert "s3cret" not in str(info.value)


async def test_sqlite_url_with_three_slashes_is_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///data/r.sqlite is relative to the working directory, parents created."""
    monkeypatch.chdir(tmp_path)
    repo = await open_repository("sqlite:///data/r.sqlite")
    await repo.add_many([reading("a", 0)], received_at=1.0)
    await repo.close()
    assert (tmp_path / "data" / "r.sqlite").is_file()


async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    """The SQLite file is in WAL mode, so readers do not block the writer."""
    path = tmp_path / "r.sqlite"
    repo = await open_repository(f"sqlite:///{path}")
    await repo.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_checkpoints_its_log_off_the_commit(tmp_path: Path) -> None:
    """Commits never checkpoint (that would stall the loop), yet the write-ahead log stays
    small: the store checkpoints it in the background, and a later commit starts it over."""
    path = tmp_path / "r.sqlite"
    repo = await open_repository(f"sqlite:///{path}")
    try:
        for seq in range(3000):  # about 25 MB of log without checkpoints
            await repo.add_many([reading("a", seq)], received_at=1.0)
            if seq % 100 == 0:
                await asyncio.sleep(0.001)  # let a checkpoint's thread get a turn
        wal = await asyncio.to_thread(os.path.getsize, f"{path}-wal")
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM readings").fetchone() == (3000,)
    finally:
        await repo.close()
    assert wal < 8_000_000, f"the log grew to {wal:,} bytes"


async def test_csv_file_layout(tmp_path: Path) -> None:
    """The CSV has the documented header and the value as compact JSON."""
    path = tmp_path / "r.csv"
    repo = await open_repository(f"csv:///{path}")
    await repo.add_many([reading("a", 3, ts=1.5, value={"k": [1, 2]})], received_at=2.0)
    await repo.close()
    assert path.read_text() == (
        'sensor,producer,seq,ts,value,received_at\na,,3,1.5,"{""k"":[1,2]}",2.0\n'
    )


V1_ROWS = [("a", 0, 1.5, "1", 10.0), ("a", 2, 2.5, "[1.0,2.0]", 11.0)]


async def test_a_version_1_sqlite_store_is_migrated(tmp_path: Path) -> None:
    """A store keyed (sensor, seq) becomes version 2 on open, its rows the anonymous
    producer's, and its keys still known."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE readings (sensor TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL, "
            "value TEXT, received_at REAL, PRIMARY KEY (sensor, seq))"
        )
        db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?)", V1_ROWS)
    repo = await open_repository(f"sqlite:///{path}")
    try:
        assert getattr(repo, "migrated_from", None) == 1
        assert [(r.producer, r.seq, r.value) for r in await repo.query()] == [
            ("", 0, 1),
            ("", 2, [1.0, 2.0]),
        ]
        again = await repo.add_many([reading("a", 0, ts=1.5, value=1)], received_at=12.0)
        assert again.duplicates == 1
    finally:
        await repo.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
    reopened = await open_repository(f"sqlite:///{path}")
    assert getattr(reopened, "migrated_from", None) is None
    await reopened.close()


async def test_a_version_1_csv_store_is_migrated(tmp_path: Path) -> None:
    """A CSV without the producer column is rewritten with it on open."""
    path = tmp_path / "old.csv"
    path.write_text(
        "sensor,seq,ts,value,received_at\n"
        + "".join(f'{s},{q},{t},"{v}",{r}\n' for s, q, t, v, r in V1_ROWS)
    )
    repo = await open_repository(f"csv:///{path}")
    try:
        assert [(r.producer, r.seq, r.value) for r in await repo.query()] == [
            ("", 0, 1),
            ("", 2, [1.0, 2.0]),
        ]
        assert (await repo.add_many([reading("a", 2, ts=2.5, value=[1.0, 2.0])], 1.0)).duplicates
    finally:
        await repo.close()
    assert path.read_text().startswith("sensor,producer,seq,ts,value,received_at\na,,0,")


@pytest.mark.postgres
async def test_a_version_1_postgres_store_is_migrated() -> None:
    """A version 1 table (no producer) is migrated in place on open."""
    await require_postgres()
    schema = f"fw_test_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f'CREATE TABLE "{schema}".readings (sensor TEXT NOT NULL, seq BIGINT NOT NULL, '
            "ts DOUBLE PRECISION, value TEXT, received_at DOUBLE PRECISION, "
            "PRIMARY KEY (sensor, seq))"
        )
        await conn.executemany(
            f'INSERT INTO "{schema}".readings VALUES ($1, $2, $3, $4, $5)', V1_ROWS
        )
        repo = await open_repository(f"{POSTGRES_URL}?schema={schema}")
        try:
            assert getattr(repo, "migrated_from", None) == 1
            assert [(r.producer, r.seq) for r in await repo.query()] == [("", 0), ("", 2)]
            both = await repo.add_many(
                [reading("a", 0, ts=1.5, value=1), reading("a", 0, value=5, producer="p")], 1.0
            )
            assert (both.duplicates, both.stored) == (1, 1)
        finally:
            await repo.close()
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_a_store_from_a_newer_forkwire_is_refused(tmp_path: Path) -> None:
    """A schema version above this code's is one clear error, and the file is untouched."""
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(SchemaError, match="schema version 99, newer"):
        await open_repository(f"sqlite:///{path}")


@pytest.mark.parametrize(("durability", "level"), [("normal", 1), ("full", 2)])
async def test_sqlite_durability_sets_synchronous(
    tmp_path: Path, durability: Durability, level: int
) -> None:
    """normal is synchronous=NORMAL (1), full is synchronous=FULL (2): an fsync a commit."""
    repo = await open_repository(f"sqlite:///{tmp_path / 'd.sqlite'}", durability)
    try:
        writer = repo._writer  # type: ignore[attr-defined]
        assert writer.execute("PRAGMA synchronous").fetchall() == [(level,)]
    finally:
        await repo.close()


async def test_csv_drops_a_torn_last_line(tmp_path: Path) -> None:
    """A last line cut short by a crash (never acked) is dropped at open."""
    path = tmp_path / "r.csv"
    repo = await open_repository(f"csv:///{path}")
    await repo.add_many([reading("a", 0)], received_at=1.0)
    await repo.close()
    with path.open("a") as file:
        file.write("a,1,0.0,1.")
    repo = await open_repository(f"csv:///{path}")
    try:
        assert [r.seq for r in await repo.query()] == [0]
        assert (await repo.add_many([reading("a", 1)], received_at=2.0)).stored == 1
        assert [r.seq for r in await repo.query()] == [0, 1]
    finally:
        await repo.close()


async def test_csv_refuses_a_foreign_file(tmp_path: Path) -> None:
    """A CSV without the readings header is not taken over."""
    path = tmp_path / "other.csv"
    path.write_text("name,age\nbob,3\n")
    with pytest.raises(ValueError, match="not a forkwire readings CSV"):
        await open_repository(f"csv:///{path}")
    assert path.read_text() == "name,age\nbob,3\n"


async def test_postgres_rejects_an_unsafe_schema_name() -> None:
    """The schema is spliced into DDL, so anything but a plain identifier is refused."""
    with pytest.raises(ValueError, match="schema must match"):
        await open_repository('postgresql://u@127.0.0.1:1/db?schema=x";DROP TABLE y;--')


async def test_screen_prints_one_line_per_reading() -> None:
    """screen:// writes a line per reading it is given."""
    out = io.StringIO()
    sink = ScreenSink(out)
    result = await sink.add_many([reading("a", 0, value=[1.0]), reading("b", 7)], received_at=1.0)
    assert result == AddResult(stored=2, duplicates=0)
    assert out.getvalue().splitlines() == ["a #0 ts=0.0 value=[1.0]", "b #7 ts=0.0 value=1.0"]


async def test_screen_url_opens_a_sink_that_prints_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """screen:// opened as a sink prints to the current stdout."""
    sink = await open_sink("screen://")
    await sink.add_many([reading("a", 0)], received_at=1.0)
    await sink.close()
    assert capsys.readouterr().out == "a #0 ts=0.0 value=1.0\n"


def test_drivers_are_imported_only_when_their_backend_is_used() -> None:
    """Opening memory:// imports neither aiosqlite nor asyncpg."""
    code = (
        "import asyncio, sys\n"
        "from forkwire.server.storage import open_repository\n"
        "asyncio.run(open_repository('memory://'))\n"
        "print(sorted({'aiosqlite', 'asyncpg'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"
