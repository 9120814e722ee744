"""The local outbox: every reading is on disk before it is sent, until the server acks it.

A server restart, a lost connection or a client crash then loses nothing that was
measured: whatever is still here is resent, and ``(sensor, seq)`` makes the resend safe.
The outbox also remembers the last seq given to each sensor, so a restarted fleet
continues its streams instead of reusing seqs the server already holds.

It is SQLite through the stdlib driver, called synchronously from the event loop. That is
deliberate: the file is local and tiny, each call is one short indexed statement, and a
thread hop per reading would cost more than the statement itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, get_args

import structlog

from forkwire.protocol import Reading

OutboxPolicy: TypeAlias = Literal["block", "drop-oldest"]
POLICIES: Final[tuple[str, ...]] = get_args(OutboxPolicy)

#: A day of one sensor at 1 Hz is 86,400 rows; 100,000 rows of small readings is about
#: 10 MB on disk, so an outage of a day or so fits for a small fleet.
DEFAULT_MAX_ROWS: Final = 100_000

# AUTOINCREMENT, unlike a plain rowid, never reuses an id after the newest row is
# deleted. The sender keeps a cursor on this id; a reused id would hide new rows behind it.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    body   TEXT    NOT NULL,
    UNIQUE (sensor, seq)
);
CREATE TABLE IF NOT EXISTS seqs (
    sensor TEXT    PRIMARY KEY,
    last   INTEGER NOT NULL
);
"""

# max() keeps the counter monotonic whichever of next_seq() and add() wrote last.
_SAVE_SEQ: Final = (
    "INSERT INTO seqs (sensor, last) VALUES (?, ?) "
    "ON CONFLICT (sensor) DO UPDATE SET last = max(last, excluded.last)"
)

#: Warn on the first drop and then once per this many, not once per reading: a full
#: outbox under load would otherwise log at the sensors' rate.
_DROP_WARN_EVERY: Final = 1000

log = structlog.get_logger("forkwire.sensors")


class OutboxFull(Exception):
    """:meth:`Outbox.add` found no room under the ``block`` policy (use ``put`` to wait)."""


class Outbox:
    """Unacked readings and per-sensor seq counters in one SQLite file.

    Args:
        path: the database file; created if missing. ``":memory:"`` works for tests but
            of course survives nothing.
        max_rows: the most unacked readings kept.
        policy: what a new reading does when ``max_rows`` are held: ``block`` waits until
            acks make room (nothing measured is lost, the sensors pause); ``drop-oldest``
            deletes the oldest unacked reading (the newest data wins, the loss is counted).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        policy: OutboxPolicy = "block",
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.path = str(path)
        self.max_rows = max_rows
        self.policy: OutboxPolicy = policy
        #: Readings written, deleted by an ack, and deleted by ``drop-oldest``.
        self.added = 0
        self.acked = 0
        self.dropped = 0
        self.dropped_by_sensor: Counter[str] = Counter()
        # Autocommit: every statement is its own transaction unless _transaction() groups
        # them, so nothing is left half-written between two awaits of the caller.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # WAL + NORMAL survive a crash of this process (the case that matters: Ctrl-C,
        # kill, OOM); only a power cut can lose the last commits, for one fsync less each.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._rows: Counter[str] = Counter(
            dict(self._db.execute("SELECT sensor, count(*) FROM outbox GROUP BY sensor"))
        )
        self._last: dict[str, int] = dict(self._db.execute("SELECT sensor, last FROM seqs"))
        self._room = asyncio.Event()

    def __len__(self) -> int:
        return self._rows.total()

    def pending_count(self, sensor: str | None = None) -> int:
        """Unacked readings held, of one sensor or of all."""
        return len(self) if sensor is None else self._rows[sensor]

    def next_seq(self, sensor: str) -> int:
        """Assign the next seq of ``sensor`` (0 for a new sensor) and persist it.

        The seq is consumed even if the reading is then dropped and never added, so the
        consumer sees the gap.
        """
        seq = self._last.get(sensor, -1) + 1
        self._db.execute(_SAVE_SEQ, (sensor, seq))
        self._last[sensor] = seq
        return seq

    def add(self, reading: Reading) -> bool:
        """Store a reading; return False if its ``(sensor, seq)`` was already held.

        Raises:
            OutboxFull: the outbox is full under the ``block`` policy.
        """
        if self.policy == "block" and len(self) >= self.max_rows:
            raise OutboxFull(f"outbox holds {len(self)} readings (max_rows)")
        dropped: tuple[str, int] | None = None
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO outbox (sensor, seq, body) VALUES (?, ?, ?) "
                "ON CONFLICT (sensor, seq) DO NOTHING",
                (reading.sensor, reading.seq, reading.model_dump_json()),
            )
            self._db.execute(_SAVE_SEQ, (reading.sensor, reading.seq))
            # Insert first, then trim: a duplicate that inserts nothing drops nothing, and
            # the new row (the newest id) is never the one trimmed.
            if cursor.rowcount and len(self) >= self.max_rows:
                dropped = self._delete_oldest()
        # The counters follow the commit, so a failed transaction leaves them true.
        self._last[reading.sensor] = max(self._last.get(reading.sensor, -1), reading.seq)
        if cursor.rowcount == 0:
            return False
        self._rows[reading.sensor] += 1
        self.added += 1
        if dropped is not None:
            self._count_drop(*dropped)
        return True

    async def put(self, reading: Reading) -> bool:
        """Store a reading, first waiting for room under the ``block`` policy."""
        while self.policy == "block" and len(self) >= self.max_rows:
            self._room.clear()
            await self._room.wait()
        return self.add(reading)

    def ack(self, sensor: str, first: int, last: int) -> int:
        """Delete the readings of ``sensor`` with ``first <= seq <= last``; return how many.

        Acks for readings no longer held (acked before, or dropped) delete nothing.
        """
        cursor = self._db.execute(
            "DELETE FROM outbox WHERE sensor = ? AND seq BETWEEN ? AND ?", (sensor, first, last)
        )
        deleted = cursor.rowcount
        if deleted:
            self._rows[sensor] -= deleted
            self.acked += deleted
            self._room.set()
        return deleted

    def pending(self, sensor: str | None = None) -> list[Reading]:
        """The unacked readings of one sensor in seq order, or of all sensors oldest first.

        Seqs are assigned as readings are added, so oldest first is seq order per sensor.
        """
        if sensor is None:
            rows = self._db.execute("SELECT body FROM outbox ORDER BY id")
        else:
            rows = self._db.execute(
                "SELECT body FROM outbox WHERE sensor = ? ORDER BY seq", (sensor,)
            )
        return [Reading.model_validate_json(body) for (body,) in rows]

    def scan(self, after: int = 0, limit: int = 100) -> list[tuple[int, Reading]]:
        """Up to ``limit`` ``(id, reading)`` rows with ``id > after``, oldest first.

        The sender walks the outbox with this cursor instead of holding a copy of it, so
        a backlog of ``max_rows`` costs no memory; restarting from 0 resends everything.
        """
        rows = self._db.execute(
            "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [(row_id, Reading.model_validate_json(body)) for row_id, body in rows]

    def has_after(self, after: int) -> bool:
        """Whether any row has ``id > after`` (a :meth:`scan` would return something)."""
        row = self._db.execute("SELECT 1 FROM outbox WHERE id > ? LIMIT 1", (after,)).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the database; unacked readings stay in the file for the next run."""
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _delete_oldest(self) -> tuple[str, int] | None:
        row = self._db.execute("SELECT id, sensor, seq FROM outbox ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        row_id, sensor, seq = row
        self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        return sensor, seq

    def _count_drop(self, sensor: str, seq: int) -> None:
        self._rows[sensor] -= 1
        self.dropped += 1
        self.dropped_by_sensor[sensor] += 1
        if self.dropped == 1 or self.dropped % _DROP_WARN_EVERY == 0:
            log.warning(
                "outbox full, dropped the oldest unacked reading",
                sensor=sensor,
                seq=seq,
                max_rows=self.max_rows,
                dropped=self.dropped,
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
