"""The local outbox: every reading is on disk before it is sent, until the server acks it.

A server restart, a lost connection or a client crash then loses nothing that was
measured: whatever is still here is resent, and the key makes the resend safe. The key is
``(sensor, producer, seq)``: the outbox is one *producer*, with an id made when the file
is created and kept in it (Kafka's idempotent producer), so a fleet restarted on the same
outbox continues its streams, and a fleet on a fresh outbox is a new stream even if it
reuses sensor names. The outbox also remembers the last seq given to each sensor.

Writes are batched: new readings and acked ones are buffered in memory, and written and
deleted in one transaction a few milliseconds later (and before anything reads the
table), so a busy fleet costs a few commits a second, never one per reading or per ack. A
reading is sent only once it is in the file: the sender reads the table, which is flushed
first. An acked reading deleted a moment later is harmless: a crash in between makes it a
resend, which the server acks as a duplicate. The sender acks rows by the ids it read them
under, so a commit touches the table's two ends, not an index over every sensor.

A sensor's last seq is its newest row's, and is saved in the seqs table in the transaction
that deletes that row; a seq given to a reading that never reached the file (a crash in
between, or a noise drop) may be given again after a restart, which is harmless, since
nothing was sent under it.

It is SQLite through the stdlib driver, called synchronously from the event loop: the file
is local, each transaction short, and a thread hop per call would cost more than it does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, get_args

from forkwire.client.logs import get_logger
from forkwire.client.sensors.outbox_file import (
    OutboxInfo,
    open_file,
    producer_of,
    size_on_disk,
    transaction,
)
from forkwire.protocol import Reading

OutboxPolicy: TypeAlias = Literal["block", "drop-oldest"]
POLICIES: Final[tuple[str, ...]] = get_args(OutboxPolicy)

#: A day of one sensor at 1 Hz is 86,400 rows; 100,000 rows of small readings is about
#: 10 MB on disk, so an outage of a day or so fits for a small fleet.
DEFAULT_MAX_ROWS: Final = 100_000

#: How long new readings and acks may wait in memory to share one commit, in seconds.
FLUSH_DELAY: Final = 0.01

#: Warn on the first drop and then once per this many, not once per reading: a full
#: outbox under load would otherwise log at the sensors' rate.
_DROP_WARN_EVERY: Final = 1000

_INSERT: Final = "INSERT INTO outbox (sensor, seq, body) VALUES (?, ?, ?)"
_DELETE_IDS: Final = (
    "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?)) RETURNING sensor, seq"
)
# max() keeps the counter monotonic whichever of next_seq() and add() wrote last.
_SAVE_SEQ: Final = (
    "INSERT INTO seqs (sensor, last) VALUES (?, ?) "
    "ON CONFLICT (sensor) DO UPDATE SET last = max(last, excluded.last)"
)

log = get_logger("forkwire.sensors")


class OutboxFull(Exception):
    """:meth:`Outbox.add` found no room under the ``block`` policy (use ``put`` to wait)."""


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
        self._db = open_file(self.path)
        self.producer, self.created_at = producer_of(self._db, self.path)
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
        # The highest seq added per sensor: a key is held once, and seqs only go up.
        self._added_last = dict(self._last)
        self._buffer: list[tuple[str, int, str]] = []
        self._acks: list[int] = []  # ids of acked rows not deleted yet
        self._flush_timer: asyncio.TimerHandle | None = None
        # Sensors waiting for room under ``block``, woken one per row freed, in order.
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._full_since: float | None = None  # monotonic time the sensors began to wait

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
        """Buffer a reading for the next flush.

        Raises:
            OutboxFull: the outbox is full under the ``block`` policy.
            ValueError: the sensor already has a reading with this seq or a later one
                (seqs come from :meth:`next_seq`).
        """
        if self.policy == "block" and len(self) >= self.max_rows:
            raise OutboxFull(f"outbox holds {len(self)} readings (max_rows)")
        sensor, seq = reading.sensor, reading.seq
        latest = self._added_last.get(sensor, -1)
        if seq <= latest:
            raise ValueError(f"{sensor} seq {seq} is not after its last added seq {latest}")
        self._added_last[sensor] = seq
        self._buffer.append((sensor, seq, reading.model_dump_json()))
        if seq > self._last.get(sensor, -1):
            self._last[sensor] = seq
        self._rows[sensor] += 1
        self.added += 1
        self._schedule_flush()

    async def put(self, reading: Reading) -> bool:
        """Store a reading, first waiting for room under the ``block`` policy."""
        while self.policy == "block" and len(self) >= self.max_rows:
            if self._full_since is None:
                # Once per episode, not per reading: the sensors pause until acks free rows.
                self._full_since = time.monotonic()
                log.warning(
                    "outbox full: sensors wait for acks to make room",
                    outbox=self.path,
                    max_rows=self.max_rows,
                )
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
        dropped: list[tuple[str, int]] = []
        with transaction(self._db):
            self._db.executemany(_INSERT, rows)
            deleted, old = self._delete(acks)
            excess = len(self) - deleted.total() - self.max_rows
            if self.policy == "drop-oldest" and excess > 0:
                dropped = self._delete_oldest(excess)
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

    def ack_rows(self, ids: Iterable[int]) -> None:
        """Delete acked rows, by the ids :meth:`scan` gave them, with the next flush (ids no
        longer held, acked before or dropped, delete nothing); the counts follow it."""
        self._acks.extend(ids)
        self._schedule_flush()

    def ack(self, sensor: str, first: int, last: int) -> int:
        """Delete the readings of ``sensor`` with ``first <= seq <= last`` now; return how
        many were held. By key, for tools and tests: the fleet acks by row id."""
        self.flush()
        before = self.acked
        self.ack_rows(
            row_id
            for (row_id,) in self._db.execute(
                "SELECT id FROM outbox WHERE sensor = ? AND seq BETWEEN ? AND ?",
                (sensor, first, last),
            )
        )
        self.flush()
        return self.acked - before

    def discard_rows(self, ids: Sequence[int]) -> Counter[str]:
        """Delete rows the server will never store (a conflict) now; count them per sensor."""
        self.flush()
        with transaction(self._db):
            deleted, _ = self._delete(list(ids))
        self._rows.subtract(deleted)
        self._make_room()
        return deleted

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
            bytes=size_on_disk(self.path),
        )

    def purge(self) -> int:
        """Delete every unacked reading (the seqs and the producer stay); return how many."""
        self.flush()
        with transaction(self._db):
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

    def _delete(self, ids: list[int]) -> tuple[Counter[str], Counter[str]]:
        """Delete rows by id (in the caller's transaction), saving the seqs they may have
        held last; count them per sensor, and the earlier run's among them."""
        deleted: Counter[str] = Counter()
        old: Counter[str] = Counter()
        if not ids:
            return deleted, old
        newest: set[str] = set()
        for sensor, seq in self._db.execute(_DELETE_IDS, (json.dumps(ids),)):
            deleted[sensor] += 1
            if seq <= self.backlog_seqs.get(sensor, -1):
                old[sensor] += 1
            if seq == self._added_last[sensor]:
                newest.add(sensor)
        # The rows just written come before these deletes, so a sensor's newest row is
        # its last added one. If that went, its seq must live on in the seqs table, or a
        # restart would give it again (the server would refuse the new value as a conflict).
        self._db.executemany(_SAVE_SEQ, [(sensor, self._last[sensor]) for sensor in newest])
        return deleted, old

    def _make_room(self) -> None:
        free = self.max_rows - len(self)
        while free > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
        if self._full_since is not None and not self._waiting:
            waited = time.monotonic() - self._full_since
            self._full_since = None
            log.info("outbox has room again", outbox=self.path, waited_s=round(waited, 3))

    def _delete_oldest(self, count: int) -> list[tuple[str, int]]:
        rows = self._db.execute(
            "SELECT id, sensor, seq FROM outbox ORDER BY id LIMIT ?", (count,)
        ).fetchall()
        if rows:
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
            sensors = {sensor for _, sensor, _ in rows}
            self._db.executemany(_SAVE_SEQ, [(sensor, self._last[sensor]) for sensor in sensors])
        return [(sensor, seq) for _, sensor, seq in rows]

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
