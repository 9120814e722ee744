"""The ingest path end to end: sensor fleets against a real server subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from fwtest import free_port, run_cli

from forkwire.client.local import LocalServer
from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.fleet import run_fleet
from forkwire.client.sensors.outbox import Outbox
from forkwire.client.sensors.status import FleetSummary


def stored(store: Path) -> dict[str, list[int]]:
    """Every sensor's stored seqs, in order."""
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT sensor, seq FROM readings ORDER BY sensor, seq").fetchall()
    seqs: dict[str, list[int]] = {}
    for sensor, seq in rows:
        seqs.setdefault(sensor, []).append(seq)
    return seqs


class Watch:
    """Turns the fleet's status callbacks into awaitable conditions (no polling)."""

    def __init__(self) -> None:
        self.latest: FleetSummary | None = None
        self._changed = asyncio.Event()

    def __call__(self, summary: FleetSummary) -> None:
        self.latest = summary
        self._changed.set()

    async def until(self, condition: Callable[[FleetSummary], bool], wait: float = 30) -> None:
        async with asyncio.timeout(wait):
            while self.latest is None or not condition(self.latest):
                self._changed.clear()
                await self._changed.wait()


async def test_fleet_survives_a_server_sigkill_and_restart(tmp_path: Path) -> None:
    """SIGKILL the server mid-stream, restart it on the same port: the fleet reconnects by
    itself and every sensor's seqs 0..max end up stored exactly once."""
    store = tmp_path / "readings.sqlite"
    server = await LocalServer.start("--db", f"sqlite:///{store}")
    port = server.port
    watch = Watch()
    stop = asyncio.Event()
    config = FleetConfig(
        port=port,
        count=3,
        # 30 readings/s, well under what 5 slots and a 50 ms group commit carry (about
        # 100/s), so no backlog is left in the outbox when the fleet stops.
        period=0.1,
        batch=5,
        outbox=tmp_path / "outbox.sqlite",
        backoff_max=0.3,
        status_interval=0.05,
        on_status=watch,
    )
    fleet = asyncio.create_task(run_fleet(config, stop=stop))
    restarted = None
    try:
        await watch.until(lambda s: s.acked >= 15)
        await server.stop(signal.SIGKILL)
        await watch.until(lambda s: s.failed_connects >= 1)
        acked_before = watch.latest.acked if watch.latest else 0
        restarted = await LocalServer.start("--db", f"sqlite:///{store}", "--port", str(port))
        await watch.until(lambda s: s.connected and s.acked >= acked_before + 15)
        stop.set()
        summary = await asyncio.wait_for(fleet, 30)
    finally:
        stop.set()
        if restarted is not None:
            await restarted.stop()
        if not fleet.done():
            fleet.cancel()

    assert summary.reconnects + summary.failed_connects >= 1
    seqs = stored(store)
    assert sorted(seqs) == ["sensor-0", "sensor-1", "sensor-2"]
    # Nothing lost: what the server has not stored is still in the outbox, to be resent.
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        unsent = {s.name: [r.seq for r in outbox.pending(s.name)] for s in summary.sensors}
    for sensor in summary.sensors:
        assert seqs[sensor.name] == list(range(sensor.acked)), sensor.name
        assert unsent[sensor.name] == list(range(sensor.acked, sensor.probed)), sensor.name


async def test_sensors_cli_stores_gap_free_ints(tmp_path: Path) -> None:
    """`forkwire sensors` with 5 random sensors: per sensor seqs 0..n-1, ints in [-100, 100]."""
    store = tmp_path / "readings.sqlite"
    server = await LocalServer.start("--db", f"sqlite:///{store}")
    try:
        args = ["sensors", "--count", "5", "--period", "0.05", "--duration", "2"]
        args += ["--port", str(server.port), "--outbox", str(tmp_path / "outbox.sqlite")]
        done = await asyncio.to_thread(run_cli, *args, timeout=60)
    finally:
        await server.stop()
    assert done.returncode == 0, done.stderr
    seqs = stored(store)
    assert len(seqs) == 5
    for sensor_seqs in seqs.values():
        assert sensor_seqs == list(range(len(sensor_seqs)))
        assert len(sensor_seqs) >= 10
    with sqlite3.connect(store) as db:
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM readings")]
    assert all(isinstance(v, int) and -100 <= v <= 100 for v in values)


async def test_sigterm_stops_the_sensors_cli_gracefully(tmp_path: Path) -> None:
    """SIGTERM (a supervisor's stop) ends `forkwire sensors` like Ctrl-C: the summary, then
    status 143 and one line saying how many readings wait in the outbox; every probed
    reading is either stored or still in the outbox."""
    store, outbox = tmp_path / "readings.sqlite", tmp_path / "outbox.sqlite"
    server = await LocalServer.start("--db", f"sqlite:///{store}")
    try:
        proc = await asyncio.create_subprocess_exec(
            *[
                sys.executable,
                "-m",
                "forkwire.client",
                "sensors",
                "--count",
                "2",
                "--period",
                "0.02",
            ],
            *["--port", str(server.port), "--outbox", str(outbox), "--no-live"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(30):
                while b"connected" not in await proc.stderr.readline():
                    pass
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await server.stop()
    assert proc.returncode == 143, stderr.decode()
    assert b"fleet stopped" in stderr
    assert b"total" in stdout
    last = stderr.decode().splitlines()[-1]
    assert last.startswith("forkwire: terminated; "), last
    assert last.endswith(f"readings not yet acked wait in the outbox {outbox}"), last
    seqs = stored(store)
    with Outbox(outbox) as left:
        for sensor in ("sensor-0", "sensor-1"):
            kept = seqs.get(sensor, [])
            unsent = [r.seq for r in left.pending(sensor)]
            assert kept == list(range(len(kept)))
            assert unsent == list(range(len(kept), len(kept) + len(unsent)))


async def test_a_quiet_fleet_pings_and_keeps_its_connection(tmp_path: Path) -> None:
    """Readings rarer than the server's idle_timeout: the fleet's pings keep its one
    connection open (no idle_timeout close, no reconnect), and every reading is stored."""
    store = tmp_path / "readings.sqlite"
    server = await LocalServer.start("--db", f"sqlite:///{store}", "--idle-timeout", "0.3")
    watch = Watch()
    stop = asyncio.Event()
    config = FleetConfig(
        port=server.port,
        count=1,
        period=1.0,  # over three idle timeouts between readings
        batch=1,
        outbox=tmp_path / "outbox.sqlite",
        status_interval=0.05,
        on_status=watch,
    )
    fleet = asyncio.create_task(run_fleet(config, stop=stop))
    try:
        await watch.until(lambda s: s.acked >= 3)
        stop.set()
        summary = await asyncio.wait_for(fleet, 30)
    finally:
        stop.set()
        if not fleet.done():
            fleet.cancel()
        await server.stop()
    assert summary.reconnects == 0
    assert not server.named("connection_timed_out")
    assert len(server.named("connection_opened")) == 1


async def test_a_first_connection_that_never_succeeds_is_an_error(tmp_path: Path) -> None:
    """sensors and replay against a port nobody listens on: exit 1 after
    --connect-timeout, one line saying so (with --wait as the way to keep trying); the
    readings taken meanwhile stay in the outbox."""
    port = str(free_port())
    rows = tmp_path / "rows.csv"
    rows.write_text("x\n1\n2\n3\n", encoding="utf-8")
    for command in (
        ["sensors", "--period", "0.05", "--outbox", str(tmp_path / "s.sqlite")],
        ["replay", str(rows), "--interval", "0", "--outbox", str(tmp_path / "r.sqlite")],
    ):
        done = await asyncio.to_thread(
            run_cli, *command, "--port", port, "--connect-timeout", "0.5", timeout=60
        )
        assert done.returncode == 1, done.stderr
        last = done.stderr.splitlines()[-1]
        assert last.startswith(f"forkwire: cannot connect to 127.0.0.1:{port}"), last
        assert "gave up after 0.5 s without ever reaching the server (--wait" in last
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        (waiting,) = db.execute("SELECT count(*) FROM outbox").fetchone()
    assert waiting > 0


async def test_wait_keeps_trying_until_the_server_comes(tmp_path: Path) -> None:
    """--wait: the fleet starts before its server, past --connect-timeout, and delivers
    everything once the server is up."""
    port = free_port()
    store = tmp_path / "readings.sqlite"
    args = ["sensors", "--count", "2", "--period", "0.1", "--duration", "6", "--wait"]
    args += ["--connect-timeout", "0.5", "--port", str(port)]
    args += ["--outbox", str(tmp_path / "outbox.sqlite"), "--json"]
    fleet = asyncio.create_task(asyncio.to_thread(run_cli, *args, timeout=60))
    await asyncio.sleep(1.0)
    server = await LocalServer.start("--db", f"sqlite:///{store}", "--port", str(port))
    try:
        done = await fleet
    finally:
        await server.stop()
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["pending"] == 0, summary
    seqs = stored(store)
    assert len(seqs) == 2
    for sensor_seqs in seqs.values():
        assert sensor_seqs == list(range(len(sensor_seqs)))
    assert sum(map(len, seqs.values())) == summary["acked"] >= 10
