"""Storage timeouts and outages (issue 11, items 7 and 8): a PostgreSQL that accepts and
never answers times out with a clear error; during an outage the server logs a bounded
number of lines and the fleet reconnects at the pace the server advises."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_sensors_e2e import Watch, stored

from forkwire.client.local import LocalServer
from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.fleet import run_fleet
from forkwire.server.storage import open_repository


@contextmanager
def black_hole() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel does, from the
    backlog) and never says a word: a PostgreSQL that stalled."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_connecting_to_a_silent_postgresql_times_out() -> None:
    with black_hole() as port:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{port} did not answer within 0\.5"):
            await open_repository(
                f"postgresql://postgres:s3cret@127.0.0.1:{port}/test", storage_timeout=0.5
            )
    assert time.monotonic() - started < 5


async def test_a_server_on_a_silent_postgresql_exits_with_a_clear_error() -> None:
    with black_hole() as port:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forkwire.server",
            *("--port", "0", "--no-udp", "--log-format", "json", "--storage-timeout", "0.5"),
            *("--db", f"postgresql://postgres:s3cret@127.0.0.1:{port}/test?password=hush"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    text = err.decode()
    assert proc.returncode == 1, text
    assert "did not answer within 0.5 s" in text
    assert "s3cret" not in text
    assert "hush" not in text


@contextmanager
def locked(store: Path) -> Iterator[None]:
    """Another process's write lock on the SQLite store: every commit of the server waits
    its busy timeout and fails."""
    db = sqlite3.connect(store, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


async def test_an_outage_is_logged_sparingly_and_the_fleet_backs_off_as_advised(
    tmp_path: Path,
) -> None:
    store = tmp_path / "readings.sqlite"
    server = await LocalServer.start(
        "--db", f"sqlite:///{store}", "--no-udp", "--storage-timeout", "0.1"
    )
    watch = Watch()
    stop = asyncio.Event()
    config = FleetConfig(
        port=server.port,
        count=3,
        period=0.05,
        batch=5,
        outbox=tmp_path / "outbox.sqlite",
        # Without the server's advice this fleet would reconnect about ten times a second.
        backoff_initial=0.05,
        backoff_max=0.1,
        status_interval=0.05,
        on_status=watch,
    )
    fleet = asyncio.create_task(run_fleet(config, stop=stop))
    outage = 4.0
    try:
        await watch.until(lambda s: s.acked >= 10)
        with locked(store):
            await watch.until(lambda s: s.reconnects >= 1)
            before = watch.latest.reconnects if watch.latest else 0
            await asyncio.sleep(outage)
            during = (watch.latest.reconnects if watch.latest else 0) - before
        acked = watch.latest.acked if watch.latest else 0
        await watch.until(lambda s: s.connected and s.acked >= acked + 10)
        stop.set()
        summary = await asyncio.wait_for(fleet, 30)
    finally:
        stop.set()
        await server.stop()
        if not fleet.done():
            fleet.cancel()

    # retry_after is at least 1 s (and grows with the outage): about one reconnect a second.
    assert during <= outage + 1, during
    failed = server.named("storage_failed")
    # One line when it began (well under 10 s ago), however many batches failed.
    assert len(failed) == 1, failed
    assert server.named("storage_recovered")
    # Nothing lost: everything acked is stored, seqs without a hole.
    seqs = stored(store)
    for sensor in summary.sensors:
        assert seqs[sensor.name] == list(range(sensor.acked)), sensor.name
