"""The metrics endpoint (--metrics-port): Prometheus counters that move with the work,
/healthz while the process serves, /readyz only while the store answers and the server is
not shutting down."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from test_app import Peer, running, settings
from test_shutdown import server

from forkwire.protocol import Ack, Calc, CalcResult, Error, ErrorCode, Hello, Reading, ReadingsMsg
from forkwire.protocol.framing import encode_frame


def get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH: the status and the body (an error status too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of /metrics by name and labels."""
    status, text = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def readings(first: int, count: int) -> ReadingsMsg:
    return ReadingsMsg(
        items=[Reading(sensor="t", seq=n, ts=1000.0 + n, value=n) for n in range(first, count)]
    )


async def test_the_metrics_move_with_jobs_readings_and_errors(tmp_path: Path) -> None:
    async with running(settings(tmp_path, metrics_port=0)) as app:
        assert app.metrics is not None
        assert app.metrics.port
        port = app.metrics.port
        before = await scrape(port)
        assert before["forkwire_jobs_started_total", ()] == 0
        assert before["forkwire_readings_stored_total", ()] == 0
        peer = await Peer.connect(app.port or 0)
        await peer.send(Hello(), Calc(id=1, ops=["1+1", "1/0"]))
        await peer.recv()  # welcome
        assert isinstance(await peer.recv(), CalcResult)
        await peer.send(readings(0, 5))
        assert isinstance(await peer.recv(), Ack)
        peer.writer.write(encode_frame(b'{"type":"nonsense"}'))
        reply = await peer.recv()
        assert isinstance(reply, Error)
        assert reply.code == ErrorCode.UNKNOWN_TYPE

        after = await scrape(port)
        await peer.close()
    assert after["forkwire_jobs_started_total", ()] == 1
    assert after["forkwire_jobs_finished_total", ()] == 1
    assert after["forkwire_jobs_running", ()] == 0
    assert after["forkwire_job_duration_seconds_count", ()] == 1
    assert after["forkwire_connections_open", ()] == 1
    assert after["forkwire_connections_total", ()] == 1
    assert after["forkwire_frames_received_total", (("type", "calc"),)] == 1
    assert after["forkwire_frames_received_total", (("type", "readings"),)] == 1
    assert after["forkwire_frames_received_total", (("type", "invalid"),)] == 1
    assert after["forkwire_frames_sent_total", (("type", "calc_result"),)] == 1
    assert after["forkwire_errors_total", (("code", "unknown_type"),)] == 1
    assert after["forkwire_readings_stored_total", ()] == 5
    assert after["forkwire_commits_total", ()] == 1
    assert after["forkwire_commit_batch_size_count", ()] == 1
    assert after["forkwire_commit_batch_size_sum", ()] == 5
    assert after["forkwire_commit_latency_seconds_count", ()] == 1
    assert after["forkwire_storage_failures_total", ()] == 0
    assert ("forkwire_udp_datagrams_received_total", ()) in after
    assert ("forkwire_children_alive", ()) in after


async def test_readyz_says_503_while_the_store_fails(tmp_path: Path) -> None:
    """Another process holds the SQLite write lock: the commit times out, the server is
    not ready; once the lock is gone and a commit succeeds, it is ready again."""
    store = tmp_path / "store.sqlite"
    config = settings(tmp_path, f"sqlite:///{store}", metrics_port=0, storage_timeout=0.2)
    async with running(config) as app:
        assert app.metrics is not None
        assert app.metrics.port
        port = app.metrics.port
        assert await asyncio.to_thread(get, port, "/readyz") == (200, "ready\n")
        lock = sqlite3.connect(store, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            peer = await Peer.connect(app.port or 0)
            await peer.send(Hello(), readings(0, 3))
            await peer.recv()  # welcome
            reply = await peer.recv()
            assert isinstance(reply, Error)
            assert reply.code == ErrorCode.STORAGE_UNAVAILABLE
            await peer.close()
            status, body = await asyncio.to_thread(get, port, "/readyz")
            assert status == 503, body
            assert "storage" in body
            assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        peer = await Peer.connect(app.port or 0)
        await peer.send(Hello(), readings(0, 3))
        await peer.recv()
        assert isinstance(await peer.recv(), Ack)
        await peer.close()
        assert await asyncio.to_thread(get, port, "/readyz") == (200, "ready\n")
        assert (await scrape(port))["forkwire_storage_failures_total", ()] >= 1


async def test_readyz_says_503_during_shutdown_and_healthz_200() -> None:
    """SIGTERM with a job still running: the server is in its grace period, still alive
    (/healthz 200) but no longer ready (/readyz 503), so a balancer stops sending."""
    async with server("--grace", "5", "--workers", "2", "--metrics-port", "0") as (proc, port):
        (started,) = proc.named("metrics_started")
        metrics = int(started["port"])
        assert (await asyncio.to_thread(get, metrics, "/readyz"))[0] == 200
        peer = await Peer.connect(port)
        await peer.send(Hello(), Calc(id=1, ops=["#hang"]))
        await peer.recv()  # welcome: the job is on its way
        async with asyncio.timeout(10):
            while True:  # until the job runs
                if (await scrape(metrics))["forkwire_jobs_running", ()] >= 1:
                    break
                await asyncio.sleep(0.05)
        proc.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            while True:  # until shutdown began
                if proc.named("server_stopping"):
                    break
                await asyncio.sleep(0.02)
        status, body = await asyncio.to_thread(get, metrics, "/readyz")
        assert status == 503
        assert "shutting down" in body
        assert (await asyncio.to_thread(get, metrics, "/healthz"))[0] == 200
        await peer.close()


async def test_unknown_paths_and_methods_are_refused(tmp_path: Path) -> None:
    async with running(settings(tmp_path, metrics_port=0)) as app:
        assert app.metrics is not None
        assert app.metrics.port
        port = app.metrics.port
        assert (await asyncio.to_thread(get, port, "/nothing"))[0] == 404

        def post() -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert await asyncio.to_thread(post) == 405
