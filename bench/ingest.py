"""Benchmark the ingest path: readings stored and acked over TCP vs SQLite inserts in process.

Run as ``python -m bench.ingest [--readings N] [--batch 1000] [--window 16]``. From one run:

- over TCP: a ``forkwire-server`` subprocess on a fresh SQLite file, and one client here
  sending ``readings`` frames of ``--batch`` items with ``--window`` frames in flight,
  timed from the first send to the last ack (every ack means committed);
- direct: the same readings inserted into a fresh SQLite file with the server's schema
  and settings (WAL, synchronous=NORMAL, INSERT OR IGNORE, a commit per batch), with the
  stdlib driver in this process: what the disk and SQLite allow without any network,
  validation or group commit;
- the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from forkwire.client.connection import Connection
from forkwire.client.local import local_server
from forkwire.protocol import Ack, Reading, ReadingsMsg

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    sensor TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL, value TEXT, received_at REAL,
    PRIMARY KEY (sensor, seq)
)
"""


def make_batches(total: int, batch: int, sensors: int = 10) -> list[list[Reading]]:
    """``total`` readings from ``sensors`` sensors, in frames of ``batch``."""
    now = time.time()
    readings = [
        Reading(
            sensor=f"bench-{i % sensors}", seq=i // sensors, ts=now + i * 1e-4, value=i % 201 - 100
        )
        for i in range(total)
    ]
    return [readings[i : i + batch] for i in range(0, total, batch)]


async def send_all(port: int, batches: list[list[Reading]], window: int) -> float:
    """Seconds from the first frame sent to the last ack received."""
    connection = await Connection.open("127.0.0.1", port, client="bench-ingest")
    slots = asyncio.Semaphore(window)
    acked = 0
    total = sum(len(b) for b in batches)
    frames = [ReadingsMsg(items=b) for b in batches]

    async def receive() -> None:
        nonlocal acked
        while acked < total:
            message = await connection.recv()
            if not isinstance(message, Ack):
                raise SystemExit(f"unexpected reply: {message}")
            acked += sum(
                last - first + 1 for runs in message.acked.values() for first, last in runs
            )
            slots.release()

    started = time.perf_counter()
    receiver = asyncio.create_task(receive())
    for frame in frames:
        await slots.acquire()
        connection.send_nowait(frame)
        await connection.drain()
    await receiver
    seconds = time.perf_counter() - started
    await connection.goodbye()
    await connection.close()
    return seconds


async def send_to_server(db: Path, batches: list[list[Reading]], window: int) -> float:
    """:func:`send_all` to a server of our own on the SQLite file ``db``."""
    async with local_server("--db", f"sqlite:///{db}", "--no-udp") as server:
        return await send_all(server.port, batches, window)


def insert_directly(db: Path, batches: list[list[Reading]]) -> float:
    """Seconds to insert every batch with the stdlib driver, one commit per batch."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    sql = "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?)"
    started = time.perf_counter()
    for batch in batches:
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(sql, [(r.sensor, r.seq, r.ts, json.dumps(r.value), now) for r in batch])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def count(db: Path) -> int:
    """Rows in a store."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])


def main() -> None:
    """Measure both ways and print readings/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="readings per frame")
    parser.add_argument("--window", type=int, default=16, help="frames in flight")
    args = parser.parse_args()
    batches = make_batches(args.readings, args.batch)
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        served, direct = Path(tmp) / "served.sqlite", Path(tmp) / "direct.sqlite"
        tcp_seconds = asyncio.run(send_to_server(served, batches, args.window))
        direct_seconds = insert_directly(direct, batches)
        stored, inserted = count(served), count(direct)
    if stored != args.readings or inserted != args.readings:
        raise SystemExit(f"stored {stored} / inserted {inserted} of {args.readings}")
    tcp_rate = args.readings / tcp_seconds
    direct_rate = args.readings / direct_seconds
    print(f"readings: {args.readings:,} in frames of {args.batch}, {args.window} in flight")
    print(f"over TCP, stored and acked : {tcp_rate:12,.0f} readings/s  ({tcp_seconds:.2f} s)")
    print(f"direct SQLite, in process  : {direct_rate:12,.0f} readings/s  ({direct_seconds:.2f} s)")
    print(f"TCP / direct               : {tcp_rate / direct_rate:12.2f}   (target >= 0.25)")
    print(
        f"TCP target                 : {'met' if tcp_rate >= 50_000 else 'NOT met'} (>= 50,000/s)"
    )


if __name__ == "__main__":
    main()
