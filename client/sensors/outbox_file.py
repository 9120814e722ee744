"""The outbox's SQLite file: its tables and their version, its producer id, its size.

:class:`~forkwire.client.sensors.outbox.Outbox` is the behaviour (buffering, counting,
waiting for room); this is what lies on disk, and how a file written by an older forkwire
is brought up to date when it is opened.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from forkwire.client.errors import InputError
from forkwire.client.logs import get_logger

log = get_logger("forkwire.sensors")

# AUTOINCREMENT, unlike a plain rowid, never reuses an id after the newest row is
# deleted. The sender keeps a cursor on this id; a reused id would hide new rows behind it.
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    body   TEXT    NOT NULL
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

#: The file's layout, in ``PRAGMA user_version``. Version 1 (user_version 0) had a unique
#: index on (sensor, seq): with 50 sensors every commit touched a hundred pages of it (each
#: sensor's oldest rows deleted, its newest added), a millisecond of the event loop per
#: flush. Rows are found by id instead: the sender knows the ids of the rows it sent.
VERSION: Final = 2

_MIGRATE_FROM_1: Final = (
    "CREATE TABLE outbox_v2 (id INTEGER PRIMARY KEY AUTOINCREMENT, sensor TEXT NOT NULL, "
    "seq INTEGER NOT NULL, body TEXT NOT NULL)",
    "INSERT INTO outbox_v2 (id, sensor, seq, body) SELECT id, sensor, seq, body FROM outbox",
    "DROP TABLE outbox",
    "ALTER TABLE outbox_v2 RENAME TO outbox",
)


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


def open_file(path: str) -> sqlite3.Connection:
    """Open (creating if missing) an outbox file, migrating an older layout.

    Raises:
        InputError: the file cannot be opened or created, or a newer forkwire wrote it.
    """
    # Autocommit: every statement is its own transaction unless transaction() groups
    # them, so nothing is left half-written between two awaits of the caller.
    try:
        db = sqlite3.connect(path, isolation_level=None)
        # WAL + NORMAL survive a crash of this process (the case that matters: Ctrl-C,
        # kill, OOM); only a power cut can lose the last commits, for one fsync less each.
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise InputError(
            f"cannot open the outbox {path}: {exc} (does its folder exist, and may it be written?)"
        ) from None
    try:
        db.execute("PRAGMA synchronous=NORMAL")
        with transaction(db):
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > VERSION:
                raise InputError(
                    f"outbox {path} has layout version {version}, newer than this forkwire's "
                    f"{VERSION}: use the forkwire that wrote it, or another outbox"
                )
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone()
            if exists and version < VERSION:
                for statement in _MIGRATE_FROM_1:
                    db.execute(statement)
                log.info("outbox migrated", outbox=path, from_version=1, to_version=VERSION)
            db.execute(f"PRAGMA user_version={VERSION}")
        # executescript commits by itself, so it stays out of the transaction above.
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def producer_of(db: sqlite3.Connection, path: str) -> tuple[str, float | None]:
    """The file's producer id and when it was made, making them if the file has none."""
    known = dict(db.execute("SELECT name, value FROM meta"))
    if "producer" in known:
        created = known.get("created_at")
        return known["producer"], float(created) if created else None
    (held,) = db.execute("SELECT count(*) FROM seqs").fetchone()
    if held:
        # An outbox from before producers: its backlog may have been sent already as the
        # anonymous producer, so it stays that producer, or a resend would be stored a
        # second time under a new id.
        producer, created = "", None
        log.warning(
            "outbox predates producer ids: it keeps sending as the anonymous producer; "
            "a fresh outbox gets an id of its own",
            outbox=path,
        )
    else:
        producer, created = uuid.uuid4().hex, time.time()
    with transaction(db):
        db.execute("INSERT INTO meta (name, value) VALUES ('producer', ?)", (producer,))
        if created is not None:
            db.execute("INSERT INTO meta (name, value) VALUES ('created_at', ?)", (repr(created),))
    return producer, created


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction around the block; rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def size_on_disk(path: str) -> int:
    """The file's bytes, its write-ahead log's included."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with suppress(OSError):
            total += Path(path + suffix).stat().st_size
    return total
