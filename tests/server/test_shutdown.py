"""Shutdown: one bounded path for TCP and UDP, and a second signal that exits at once.

The server runs as a real process (``targeted_server.py``: its jobs obey directives such
as ``#hang``), signalled as an operator or a supervisor would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog
from test_app import Peer, running, settings
from test_jobs import pid_exists, wait_for_condition

from forkwire.protocol import Calc, Stats, StatsResult, pack
from forkwire.server.app import STORAGE_MARGIN
from forkwire.server.storage.memory import MemoryRepository

SCRIPT = Path(__file__).with_name("targeted_server.py")


class Server:
    """A server process and the JSON events it logged."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "raw", "text": line.decode(errors="replace")})

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def started(self) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while not self.named("server_started"):
                assert self.proc.returncode is None, self.events
                await asyncio.sleep(0.02)
        return self.named("server_started")[0]

    async def exited(self, within: float) -> int:
        """The exit status, which must come within ``within`` seconds."""
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(self._reader, 5)
        return code


@contextlib.asynccontextmanager
async def server(*args: str, **env: str) -> AsyncIterator[tuple[Server, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *("--host", "127.0.0.1", "--port", "0", "--log-format", "json", "--db", "memory://"),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    running_server = Server(proc)
    try:
        started = await running_server.started()
        yield running_server, int(started["port"])
    finally:
        # Twice: the second signal kills the job children too (a SIGKILL of the server
        # would leave hanging ones holding its stderr for a minute).
        for _ in range(2):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.3)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def hang_flood(port: int, stop: threading.Event) -> None:
    """Calc datagrams whose jobs never end, as fast as one thread sends them."""
    datagrams = [pack(Calc(id=n, ops=["#hang"])) for n in range(64)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while not stop.is_set():
            for datagram in datagrams:
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.sendto(datagram, ("127.0.0.1", port))
            time.sleep(0.001)


async def test_sigterm_with_a_full_udp_queue_exits_0_within_grace() -> None:
    """A UDP flood of never-ending jobs fills udp_max_inflight; SIGTERM still exits 0 within
    grace + 2 s, and the log says what was abandoned."""
    async with server("--grace", "1", "--workers", "2") as (proc, port):
        stop = threading.Event()
        flooder = threading.Thread(target=hang_flood, args=(port, stop))
        flooder.start()
        try:
            peer = await Peer.connect(port)
            async with asyncio.timeout(10):
                while True:  # until the UDP queue is full
                    await peer.send(Stats())
                    stats = await peer.recv()
                    assert isinstance(stats, StatsResult)
                    if stats.counters.get("udp_datagrams_dropped_busy", 0) > 100:
                        break
                    await asyncio.sleep(0.05)
            await peer.close()
            signalled = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            code = await proc.exited(within=1 + 2)
            took = time.monotonic() - signalled
        finally:
            stop.set()
            await asyncio.to_thread(flooder.join)
    assert code == 0, proc.events[-5:]
    assert took < 3.0
    (expired,) = proc.named("grace_expired")
    assert expired["udp_requests_dropped"] == 64
    assert expired["jobs_cancelled"] == 1  # UDP's jobs take half the workers at most
    (stopped,) = proc.named("server_stopped")
    assert stopped["children_alive"] == 0
    assert stopped["udp_datagrams_refused_stopping"] >= 0
    assert proc.named("shutdown_complete")


async def test_a_second_sigterm_exits_at_once_with_143() -> None:
    """A job that never ends holds the graceful path for its grace; a second SIGTERM ends
    the process within a second, status 143, logged, and its child is killed."""
    async with server("--grace", "30") as (proc, port):
        peer = await Peer.connect(port)
        await peer.send(Calc(id=1, ops=["#hang"]), Stats())
        stats = await peer.recv()  # the calc frame was read before this one
        assert isinstance(stats, StatsResult)
        assert await wait_for_condition(lambda: bool(_children_of(proc)), within=10)
        children = _children_of(proc)
        proc.proc.send_signal(signal.SIGTERM)
        assert await wait_for_condition(lambda: bool(proc.named("server_stopping")), within=10)
        await asyncio.sleep(0.3)
        assert proc.proc.returncode is None, "the first signal waits for the job"
        signalled = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = await proc.exited(within=5)
        took = time.monotonic() - signalled
        await peer.close()
    assert code == 128 + signal.SIGTERM
    assert took < 1.0
    (forced,) = proc.named("forced_exit")
    assert forced["signal"] == "SIGTERM"
    assert forced["jobs_abandoned"] == 1
    assert await wait_for_condition(lambda: not any(pid_exists(pid) for pid in children))


async def test_sigint_twice_exits_130() -> None:
    async with server("--grace", "30") as (proc, port):
        peer = await Peer.connect(port)
        await peer.send(Calc(id=1, ops=["#hang"]), Stats())
        assert isinstance(await peer.recv(), StatsResult)
        proc.proc.send_signal(signal.SIGINT)
        assert await wait_for_condition(lambda: bool(proc.named("server_stopping")), within=10)
        proc.proc.send_signal(signal.SIGINT)
        assert await proc.exited(within=5) == 130
        await peer.close()


def _children_of(proc: Server) -> list[int]:
    """Pids of the job children: the forkserver's children (the server's grandchildren)."""
    try:
        tree = psutil.Process(proc.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child.pid for child in tree if child.ppid() != proc.proc.pid]


async def test_a_store_that_never_closes_is_left_behind_within_the_margin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage gets the rest of grace and a margin to close; a close that hangs (a silent
    PostgreSQL) is logged and abandoned instead of holding the exit forever."""
    closing = asyncio.Event()

    async def never(self: MemoryRepository) -> None:
        closing.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(MemoryRepository, "close", never)
    with structlog.testing.capture_logs() as logs:
        quick = settings(tmp_path, "memory://").model_copy(update={"grace": 0.5})
        async with running(quick):
            stopping = time.monotonic()
        took = time.monotonic() - stopping
    assert closing.is_set()
    assert took <= 0.5 + STORAGE_MARGIN + 0.5
    assert [e["what"] for e in logs if e["event"] == "storage_close_abandoned"] == ["store"]


async def test_a_store_that_never_closes_does_not_hold_the_exit() -> None:
    """The process exits 1 within grace + 2 s, saying what it left, when the store's close
    never returns (the asyncio runner's own cleanup would wait for it forever)."""
    async with server("--grace", "0.5", HANG_STORE_CLOSE="1") as (proc, _):
        signalled = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        code = await proc.exited(within=0.5 + 2)
        took = time.monotonic() - signalled
    assert code == 1
    assert took < 2.5
    (abandoned,) = proc.named("exit_with_storage_abandoned")
    assert abandoned["abandoned"] == ["store"]
