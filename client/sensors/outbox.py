"""The local outbox: every reading is on disk before it is sent, until the server acks it.

A server restart, a lost connection or a client crash then loses nothing that was
measured: whatever is still here is resent, and the key makes the resend safe. The key is
``(sensor, producer, seq)``: the outbox is one *producer*, with an id made when the file
is created and kept in it (Kafka's idempotent producer), so a fleet restarted on the same
outbox continues its streams, and a fleet on a fresh outbox is a new stream even if it
reuses sensor names. The outbox also remembers the last seq given to each sensor.

Writes are batched: new readings and acked ones are buffered in memory, and written and
deleted in one transaction when the event loop comes round (and before anything reads the
table), so a busy fleet costs one commit per turn of the loop, never one per reading or
per ack. A reading is sent only once it is in the file: the sender reads the table, which
is flushed first. An acked reading deleted a moment later is harmless: a crash in between
makes it a resend, which the server acks as a duplicate. A sensor's last seq is its newest
row's, and is saved in the seqs table in the transaction that deletes that row; a seq
given to a reading that never reached the file (a crash in between, or a noise drop) may
be given again after a restart, which is harmless, since nothing was sent under it.

It is SQLite through the stdlib driver, called synchronously from the event loop: the file
is local, each transaction short, and a thread hop per call would cost more than it does.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_INSERT: Final = "INSERT OR IGNORE INTO outbox (sensor, seq, body) VALUES (?, ?, ?)"
# max() keeps the counter monotonic whichever of next_seq() and add() wrote last.
_SAVE_SEQ: Final = (
    "INSERT INTO seqs (sensor, last) VALUES (?, ?) "
    "ON CONFLICT (sensor) DO UPDATE SET last = max(last, excluded.last)"
)
_DELETE_RUN: Final = "DELETE FROM outbox WHERE sensor = ? AND seq BETWEEN ? AND ?"

#: How long new readings and acks may wait in memory to share one commit, in seconds.
FLUSH_DELAY: Final = 0.002

#: Warn on the first drop and then once per this many, not once per reading: a full
#: outbox under load would otherwise log at the sensors' rate.
_DROP_WARN_EVERY: Final = 1000

log = structlog.get_logger("forkwire.sensors")


class OutboxFull(Exception):
    """:meth:`Outbox.add` found no room under the ``block`` policy (use ``put`` to wait)."""


@dataclass(frozen=True, slots=True)
class OutboxInfo:
    """What an outbox file holds, for ``forkwire outbox``."""

    path: str
    producer: str
    created_at: float | None
    waiting: dict[str, int]
    oldest_ts: float | None
    bytes: int

    @property
    def total(self) -> int:
        return sum(self.waiting.values())


class Outbox:
    """Unacked readings, per-sensor seq counters and the producer id in one SQLite file.

    Args:
        path: the database file; created if missing (with a new producer id).
            ``":memory:"`` works for tests but of course survives nothing.
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
        #: Readings written, deleted by an ack, deleted by ``drop-oldest``, and deleted as
        #: conflicts (their key is stored with another value: they can never be acked).
        self.added = 0
        self.acked = 0
        self.dropped = 0
        self.dropped_by_sensor: Counter[str] = Counter()
        #: Readings deleted by acks per sensor, and how many of them an earlier run left.
        self.acked_by_sensor: Counter[str] = Counter()
        self.acked_backlog_by_sensor: Counter[str] = Counter()
        #: Called after each flush that deleted something (the fleet's "delivered" signal).
        self.on_deleted: Callable[[], None] | None = None
        # Autocommit: every statement is its own transaction unless _transaction() groups
        # them, so nothing is left half-written between two awaits of the caller.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # WAL + NORMAL survive a crash of this process (the case that matters: Ctrl-C,
        # kill, OOM); only a power cut can lose the last commits, for one fsync less each.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.producer, self.created_at = self._producer()
        self._rows: Counter[str] = Counter(
            dict(self._db.execute("SELECT sensor, count(*) FROM outbox GROUP BY sensor"))
        )
        #: Readings an earlier run left here, and each sensor's highest seq among them.
        self.backlog = self._rows.total()
        self.backlog_seqs: dict[str, int] = dict(
            self._db.execute("SELECT sensor, max(seq) FROM outbox GROUP BY sensor")
        )
        # A sensor's last seq is in its newest row, or (once its rows are acked and gone)
        # in the seqs table, saved when the rows that held it are deleted.
        self._last: dict[str, int] = dict(self._db.execute("SELECT sensor, last FROM seqs"))
        for sensor, seq in self.backlog_seqs.items():
            self._last[sensor] = max(seq, self._last.get(sensor, -1))
        self._buffer: list[tuple[str, int, str]] = []
        self._acks: list[tuple[str, int, int]] = []  # acked runs not deleted yet
        self._flush_timer: asyncio.TimerHandle | None = None
        # Sensors waiting for room under ``block``, woken one per row freed, in order.
        self._waiting: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return self._rows.total()

    def pending_count(self, sensor: str | None = None) -> int:
        """Unacked readings held (written or buffered), of one sensor or of all."""
        return len(self) if sensor is None else self._rows[sensor]

    def next_seq(self, sensor: str) -> int:
        """Assign the next seq of ``sensor`` (0 for a new sensor).

        The seq is consumed even if the reading is then dropped and never added, so the
        consumer sees the gap (in this run: see the module's note on restarts).
        """
        seq = self._last.get(sensor, -1) + 1
        self._last[sensor] = seq
        return seq

    def add(self, reading: Reading) -> None:
        """Buffer a reading for the next flush (a repeat of a held key is ignored then).

        Raises:
            OutboxFull: the outbox is full under the ``block`` policy.
        """
        if self.policy == "block" and len(self) >= self.max_rows:
            raise OutboxFull(f"outbox holds {len(self)} readings (max_rows)")
        self._buffer.append((reading.sensor, reading.seq, reading.model_dump_json()))
        if reading.seq > self._last.get(reading.sensor, -1):
            self._last[reading.sensor] = reading.seq
        self._rows[reading.sensor] += 1
        self.added += 1
        self._schedule_flush()

    async def put(self, reading: Reading) -> bool:
        """Store a reading, first waiting for room under the ``block`` policy."""
        while self.policy == "block" and len(self) >= self.max_rows:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    self._waiting.remove(waiter)
        self.add(reading)
        return True

    def flush(self) -> None:
        """Write what is buffered, delete what was acked (saving the seqs it held), in one
        transaction."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._buffer and not self._acks:
            return
        rows, self._buffer = self._buffer, []
        acks, self._acks = self._acks, []
        # Deleting acked rows may delete a sensor's newest seq: keep it in the seqs table.
        seqs = [
            (sensor, self._last[sensor])
            for sensor in {sensor for sensor, _, _ in acks}
            if sensor in self._last
        ]
        dropped: list[tuple[str, int]] = []
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(_INSERT, rows)
            inserted = self._db.total_changes - before
            self._db.executemany(_SAVE_SEQ, seqs)
            deleted, old = self._delete_acked(acks)
            excess = len(self) - deleted.total() - self.max_rows
            if self.policy == "drop-oldest" and excess > 0:
                dropped = self._delete_oldest(excess)
        if inserted != len(rows):
            # Keys that were held already: count what the table really holds.
            self._recount({sensor for sensor, _, _ in rows})
        for sensor, seq in dropped:
            self._count_drop(sensor, seq)
        if deleted:
            self._rows.subtract(deleted)
            self.acked += deleted.total()
            self.acked_by_sensor.update(deleted)
            self.acked_backlog_by_sensor.update(old)
            self._make_room()
            if self.on_deleted is not None:
                self.on_deleted()

    def ack(self, sensor: str, first: int, last: int) -> int:
        """Delete the readings of ``sensor`` with ``first <= seq <= last`` now; return how
        many were held."""
        before = self.acked
        self.ack_many({sensor: [(first, last)]})
        self.flush()
        return self.acked - before

    def ack_many(self, acked: Mapping[str, Sequence[tuple[int, int]]]) -> None:
        """Delete the acked runs of seqs with the next flush (acks for readings no longer
        held, acked before or dropped, delete nothing); the counts follow the flush."""
        self._acks.extend(
            (sensor, first, last) for sensor, runs in acked.items() for first, last in runs
        )
        self._schedule_flush()

    def discard(self, refused: Mapping[str, Sequence[tuple[int, int]]]) -> Counter[str]:
        """Delete readings the server will never store (a conflict) now; count them."""
        self.flush()
        deleted: Counter[str] = Counter()
        with self._transaction():
            for sensor, runs in refused.items():
                for first, last in runs:
                    deleted[sensor] += self._db.execute(_DELETE_RUN, (sensor, first, last)).rowcount
        self._rows.subtract(deleted)
        self._make_room()
        return +deleted

    def pending(self, sensor: str | None = None) -> list[Reading]:
        """The unacked readings of one sensor in seq order, or of all sensors oldest first."""
        self.flush()
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
        # Acks waiting to be deleted are all of rows up to the cursor (sent), so only a
        # scan from the start needs them applied first.
        if after == 0 and self._acks:
            self.flush()
        rows = self._select(after, limit)
        if len(rows) < limit and self._buffer:
            # Buffered readings come after every row in the file, and must be in the file
            # before they are sent: write them, then take them too.
            self.flush()
            rows = self._select(after, limit)
        return [(row_id, Reading.model_validate_json(body)) for row_id, body in rows]

    def _select(self, after: int, limit: int) -> list[tuple[int, str]]:
        return self._db.execute(
            "SELECT id, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()

    def has_after(self, after: int) -> bool:
        """Whether any row has ``id > after`` (a :meth:`scan` would return something)."""
        if self._buffer:
            return True
        row = self._db.execute("SELECT 1 FROM outbox WHERE id > ? LIMIT 1", (after,)).fetchone()
        return row is not None

    def info(self) -> OutboxInfo:
        """What the file holds: producer, readings waiting per sensor, the oldest, size."""
        self.flush()
        oldest = self._db.execute("SELECT body FROM outbox ORDER BY id LIMIT 1").fetchone()
        return OutboxInfo(
            path=self.path,
            producer=self.producer,
            created_at=self.created_at,
            waiting=dict(sorted(self._rows.items())),
            oldest_ts=Reading.model_validate_json(oldest[0]).ts if oldest else None,
            bytes=_size(self.path),
        )

    def purge(self) -> int:
        """Delete every unacked reading (the seqs and the producer stay); return how many."""
        self.flush()
        with self._transaction():
            (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
            # The seqs they held are kept: they may have reached the server already.
            self._db.executemany(_SAVE_SEQ, list(self._last.items()))
            self._db.execute("DELETE FROM outbox")
        self._rows.clear()
        self._make_room()
        return int(count)

    def close(self) -> None:
        """Write what is buffered and close; unacked readings stay for the next run."""
        try:
            self.flush()
        finally:
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

    def _producer(self) -> tuple[str, float | None]:
        known = dict(self._db.execute("SELECT name, value FROM meta"))
        if "producer" in known:
            created = known.get("created_at")
            return known["producer"], float(created) if created else None
        (held,) = self._db.execute("SELECT count(*) FROM seqs").fetchone()
        if held:
            # An outbox from before producers: its backlog may have been sent already as
            # the anonymous producer, so it stays that producer, or a resend would be
            # stored a second time under a new id.
            producer, created = "", None
            log.warning(
                "outbox predates producer ids: it keeps sending as the anonymous producer; "
                "a fresh outbox gets an id of its own",
                outbox=self.path,
            )
        else:
            producer, created = uuid.uuid4().hex, time.time()
        with self._transaction():
            self._db.execute("INSERT INTO meta (name, value) VALUES ('producer', ?)", (producer,))
            if created is not None:
                self._db.execute(
                    "INSERT INTO meta (name, value) VALUES ('created_at', ?)", (repr(created),)
                )
        return producer, created

    def _schedule_flush(self) -> None:
        if self._flush_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no loop (a script, a test): write at once
            return
        # A few milliseconds gather a fast fleet's readings and acks into one commit; the
        # sender never waits for it (scan flushes what it is about to send).
        self._flush_timer = loop.call_later(FLUSH_DELAY, self.flush)

    def _delete_acked(self, acks: list[tuple[str, int, int]]) -> tuple[Counter[str], Counter[str]]:
        """Delete acked runs (in the caller's transaction); count them, and the earlier
        run's among them (seqs up to the backlog's highest at open)."""
        deleted: Counter[str] = Counter()
        old: Counter[str] = Counter()
        for sensor, first, last in acks:
            ceiling = self.backlog_seqs.get(sensor, -1)
            if first <= ceiling:
                count = self._db.execute(_DELETE_RUN, (sensor, first, min(last, ceiling))).rowcount
                old[sensor] += count
                deleted[sensor] += count
            if last > ceiling:
                low = max(first, ceiling + 1)
                deleted[sensor] += self._db.execute(_DELETE_RUN, (sensor, low, last)).rowcount
        return +deleted, +old

    def _make_room(self) -> None:
        free = self.max_rows - len(self)
        while free > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def _delete_oldest(self, count: int) -> list[tuple[str, int]]:
        rows = self._db.execute(
            "SELECT id, sensor, seq FROM outbox ORDER BY id LIMIT ?", (count,)
        ).fetchall()
        if rows:
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
        return [(sensor, seq) for _, sensor, seq in rows]

    def _recount(self, sensors: set[str]) -> None:
        for sensor in sensors:
            (count,) = self._db.execute(
                "SELECT count(*) FROM outbox WHERE sensor = ?", (sensor,)
            ).fetchone()
            self.added -= self._rows[sensor] - count
            self._rows[sensor] = count

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


def _size(path: str) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with suppress(OSError):
            total += Path(path + suffix).stat().st_size
    return total
