"""Storage timeouts and outages (issue 11, items 7 and 8): a PostgreSQL that accepts and
never answers times out with a clear error; during an outage the server logs a bounded
number of lines and the fleet reconnects at the pace the server advises."""

from __future__ import annotations

import asyncio
import re
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


async def test_the_profiles_sender_waits_as_the_server_advises(tmp_path: Path) -> None:
    """Its store locked, the server answers storage_unavailable with retry_after >= 1 s:
    each of the sender's retries waits at least that (its own backoff starts at 0.1 s),
    and once the lock is gone every profile is stored."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "client" / "profiles"))
    from test_profiles import SUMMARY, run_profiles_cli, stored_profiles

    store = tmp_path / "readings.sqlite"
    server = await LocalServer.start(
        "--db", f"sqlite:///{store}", "--no-udp", "--storage-timeout", "0.1"
    )
    lock = sqlite3.connect(store, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")

    async def release() -> None:
        lock.execute("ROLLBACK")

    try:
        args = ["20", "--interval", "0", "--ages", "0-120", "--port", str(server.port)]
        args += ["--spool", str(tmp_path / "spool.jsonl"), "--drain-timeout", "60"]
        code, out, err = await run_profiles_cli(*args, failures_before=3, on_failures=release)
    finally:
        lock.close()
        await server.stop()
    assert code == 0, err
    waits = [float(w) for w in re.findall(r"retry_in\W+([0-9.]+)", err)]
    assert len(waits) >= 3, err
    assert all(wait >= 1.0 for wait in waits[:3]), waits
    summary = SUMMARY.search(out[-1])
    assert summary is not None, out
    kept = int(summary.group(2))
    assert sum(len(records) for records in stored_profiles(store).values()) == kept
