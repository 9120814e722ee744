"""The outbox: readings on disk until acked, seqs that survive restarts, a bounded size."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from forkwire.client.errors import InputError
from forkwire.client.sensors.outbox import FLUSH_DELAY, Outbox, OutboxFull
from forkwire.client.sensors.outbox_file import VERSION
from forkwire.protocol import Reading


def reading(sensor: str, seq: int, value: int | float | list[float] = 1) -> Reading:
    return Reading(sensor=sensor, seq=seq, ts=1_700_000_000.0 + seq, value=value)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite"


def test_pending_until_acked(path: Path) -> None:
    """A reading stays pending until an ack covers its seq."""
    with Outbox(path) as outbox:
        for seq in range(4):
            outbox.add(reading("a", seq))
        assert outbox.ack("a", 1, 2) == 2
        assert [r.seq for r in outbox.pending("a")] == [0, 3]
        assert (outbox.added, outbox.acked, len(outbox)) == (4, 2, 2)


def test_ack_of_unknown_readings_deletes_nothing(path: Path) -> None:
    """A repeated ack, or one for another sensor, changes nothing."""
    with Outbox(path) as outbox:
        outbox.add(reading("a", 0))
        assert outbox.ack("a", 0, 0) == 1
        assert outbox.ack("a", 0, 0) == 0
        assert outbox.ack("b", 0, 10) == 0
        assert outbox.acked == 1


def test_pending_survives_a_restart(path: Path) -> None:
    """Unacked readings, values included, are still there after reopening the file."""
    kept = [reading("a", 0, 3), reading("a", 1, 2.5), reading("b", 0, [1.0, 2.0])]
    with Outbox(path) as outbox:
        for r in kept:
            outbox.add(r)
    with Outbox(path) as outbox:
        assert outbox.pending() == kept
        assert outbox.pending_count("a") == 2


def test_pending_orders_oldest_first(path: Path) -> None:
    """One sensor's pending readings, or all sensors' in the order they were added."""
    with Outbox(path) as outbox:
        for r in (reading("a", 1), reading("b", 0), reading("a", 2)):
            outbox.add(r)
        assert [r.seq for r in outbox.pending("a")] == [1, 2]
        assert [(r.sensor, r.seq) for r in outbox.pending()] == [("a", 1), ("b", 0), ("a", 2)]


def test_a_seq_added_again_is_refused(path: Path) -> None:
    """A key is held once: a seq at or below the sensor's last added one is a ValueError,
    in this run and after a restart, and the outbox is unchanged."""
    with Outbox(path) as outbox:
        outbox.add(reading("a", 3))
        with pytest.raises(ValueError, match="a seq 3 is not after its last added seq 3"):
            outbox.add(reading("a", 3, 99))
        with pytest.raises(ValueError, match="seq 2"):
            outbox.add(reading("a", 2))
    with Outbox(path) as outbox:
        with pytest.raises(ValueError, match="seq 3"):
            outbox.add(reading("a", 3))
        outbox.add(reading("a", 4))
        assert [(r.seq, r.value) for r in outbox.pending("a")] == [(3, 1), (4, 1)]
        assert (outbox.added, len(outbox)) == (1, 2)


def test_rows_are_acked_and_discarded_by_id(path: Path) -> None:
    """The fleet acks the rows it sent by their scan ids (deleted with the next flush); a conflict
    discards rows at once and counts them per sensor; unknown ids delete nothing."""
    with Outbox(path) as outbox:
        for seq in range(3):
            outbox.add(reading("a", seq))
        outbox.add(reading("b", 0))
        ids = [row_id for row_id, _ in outbox.scan(0, 10)]
        outbox.ack_rows([ids[0], ids[3], 999_999])
        outbox.flush()
        assert (outbox.acked, dict(outbox.acked_by_sensor)) == (2, {"a": 1, "b": 1})
        assert outbox.discard_rows([ids[1], ids[0]]) == {"a": 1}
        assert [r.seq for r in outbox.pending()] == [2]
        assert (len(outbox), outbox.pending_count("a"), outbox.pending_count("b")) == (1, 1, 0)


def test_an_outbox_of_the_first_layout_is_migrated(path: Path) -> None:
    """A file with the old unique (sensor, seq) index keeps its rows, ids and producer,
    and loses the index; a file of a newer layout is refused with one line."""
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, "
        "seq INTEGER NOT NULL, body TEXT NOT NULL, UNIQUE (sensor, seq));"
        "CREATE TABLE seqs (sensor TEXT PRIMARY KEY, last INTEGER NOT NULL);"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('producer', 'p1');"
        f"INSERT INTO outbox VALUES (7, 'a', 5, '{reading('a', 5).model_dump_json()}');"
    )
    old.close()
    with Outbox(path) as outbox:
        assert outbox.producer == "p1"
        assert [(row_id, r.seq) for row_id, r in outbox.scan(0, 10)] == [(7, 5)]
        assert outbox.next_seq("a") == 6
    on_disk = sqlite3.connect(path)
    assert on_disk.execute("PRAGMA user_version").fetchone() == (VERSION,)
    indexes = on_disk.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert all("outbox" not in name for (name,) in indexes)
    on_disk.execute(f"PRAGMA user_version = {VERSION + 1}")
    on_disk.close()
    with pytest.raises(InputError, match=f"layout version {VERSION + 1}, newer"):
        Outbox(path)


async def test_writes_are_batched_into_one_transaction_per_loop_turn(path: Path) -> None:
    """Readings added in one turn of the event loop are written together, once the loop
    comes round (or before anything reads the table)."""
    with Outbox(path) as outbox:
        for seq in range(100):
            outbox.add(reading("a", seq))
        on_disk = sqlite3.connect(path)
        assert on_disk.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
        await asyncio.sleep(FLUSH_DELAY * 5)
        assert on_disk.execute("SELECT count(*) FROM outbox").fetchone() == (100,)
        on_disk.close()


def test_an_outbox_is_a_producer_for_life(path: Path) -> None:
    """A new outbox makes a producer id and keeps it across restarts; another file, another."""
    with Outbox(path) as outbox:
        first = outbox.producer
        assert len(first) == 32
    with Outbox(path) as outbox:
        assert outbox.producer == first
    with Outbox(path.with_name("other.sqlite")) as other:
        assert other.producer != first


def test_an_outbox_from_before_producers_stays_anonymous(path: Path) -> None:
    """A file that held seqs before producer ids keeps sending as the anonymous producer,
    so its backlog, maybe sent already, is not stored twice."""
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, "
        "seq INTEGER NOT NULL, body TEXT NOT NULL, UNIQUE (sensor, seq));"
        "CREATE TABLE seqs (sensor TEXT PRIMARY KEY, last INTEGER NOT NULL);"
        "INSERT INTO seqs VALUES ('a', 4);"
    )
    old.close()
    with Outbox(path) as outbox:
        assert outbox.producer == ""
        assert outbox.next_seq("a") == 5


def test_backlog_and_purge(path: Path) -> None:
    """Readings a run leaves are the next run's backlog; purge empties the outbox."""
    with Outbox(path) as outbox:
        for seq in range(3):
            outbox.add(reading("a", seq))
        outbox.add(reading("b", 0))
    with Outbox(path) as outbox:
        assert outbox.backlog == 4
        assert outbox.backlog_seqs == {"a": 2, "b": 0}
        info = outbox.info()
        assert (info.waiting, info.total, info.producer) == ({"a": 3, "b": 1}, 4, outbox.producer)
        assert info.oldest_ts == reading("a", 0).ts
        assert outbox.purge() == 4
        assert len(outbox) == 0
        assert outbox.next_seq("a") == 3


def test_next_seq_continues_after_restart_even_when_drained(path: Path) -> None:
    """A sensor's last stored seq is kept when its rows are acked, so a drained outbox
    still continues the stream; a seq never written anywhere (nothing was sent under it)
    may be given again."""
    with Outbox(path) as outbox:
        assert [outbox.next_seq("a") for _ in range(3)] == [0, 1, 2]
        assert outbox.next_seq("b") == 0
        outbox.add(reading("a", 2))
        outbox.ack("a", 2, 2)
        assert len(outbox) == 0
    with Outbox(path) as outbox:
        assert outbox.next_seq("a") == 3
        assert outbox.next_seq("b") == 0


def test_add_advances_the_seq_counter(path: Path) -> None:
    """A reading added with an explicit seq is never handed out again by next_seq."""
    with Outbox(path) as outbox:
        outbox.add(reading("a", 7))
        assert outbox.next_seq("a") == 8


def test_scan_cursor_never_hides_new_rows(path: Path) -> None:
    """Ids are never reused, so rows added after the newest was deleted are after the cursor."""
    with Outbox(path) as outbox:
        outbox.add(reading("a", 0))
        [(cursor, _)] = outbox.scan(0, 10)
        outbox.ack("a", 0, 0)
        outbox.add(reading("a", 1))
        assert outbox.has_after(cursor)
        assert [r.seq for _, r in outbox.scan(cursor, 10)] == [1]


def test_drop_oldest_keeps_the_newest(path: Path) -> None:
    """Under drop-oldest a full outbox deletes its oldest reading, counts it and warns."""
    with capture_logs() as logs, Outbox(path, max_rows=3, policy="drop-oldest") as outbox:
        for seq in range(5):
            outbox.add(reading("a", seq))
        assert [r.seq for r in outbox.pending()] == [2, 3, 4]
        assert (outbox.added, outbox.dropped, outbox.dropped_by_sensor["a"]) == (5, 2, 2)
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings
    assert warnings[0]["sensor"] == "a"


def test_block_add_raises_when_full(path: Path) -> None:
    """The synchronous add refuses a reading under block when full; nothing is dropped."""
    with Outbox(path, max_rows=2) as outbox:
        outbox.add(reading("a", 0))
        outbox.add(reading("a", 1))
        with pytest.raises(OutboxFull):
            outbox.add(reading("a", 2))
        assert (len(outbox), outbox.dropped) == (2, 0)


async def test_a_blocked_outbox_says_so_once_and_when_it_clears(path: Path) -> None:
    """Under block, the first sensor to wait logs one warning for the episode (not one
    per reading), and the outbox logs once when the waiting is over."""
    with capture_logs() as logs, Outbox(path, max_rows=1) as outbox:
        await outbox.put(reading("a", 0))
        waiting = [asyncio.create_task(outbox.put(reading(s, 1))) for s in "bcd"]
        for _ in range(3):
            await asyncio.sleep(0)
        outbox.ack("a", 0, 0)  # room for one: b goes on, c and d still wait
        await asyncio.sleep(0)
        for sensor in "bc":
            outbox.ack(sensor, 1, 1)
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*waiting), 1.0)
        outbox.ack("d", 1, 1)
    events = [e["event"] for e in logs if "outbox" in e["event"]]
    assert events == ["outbox full: sensors wait for acks to make room", "outbox has room again"]


async def test_block_put_waits_for_an_ack(path: Path) -> None:
    """Under block, put waits while the outbox is full and goes on once an ack makes room."""
    with Outbox(path, max_rows=2) as outbox:
        await outbox.put(reading("a", 0))
        await outbox.put(reading("a", 1))
        waiting = asyncio.create_task(outbox.put(reading("a", 2)))
        for _ in range(3):
            await asyncio.sleep(0)  # give the put every chance to (wrongly) go through
        assert not waiting.done()
        outbox.ack("a", 0, 0)
        assert await asyncio.wait_for(waiting, 1.0)
        assert [r.seq for r in outbox.pending()] == [1, 2]
        assert outbox.dropped == 0


def test_bad_arguments_are_refused(path: Path) -> None:
    """An unknown policy or a non-positive bound is a ValueError."""
    with pytest.raises(ValueError, match="policy"):
        Outbox(path, policy="drop-newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_rows"):
        Outbox(path, max_rows=0)
