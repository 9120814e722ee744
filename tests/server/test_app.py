"""The server's I/O shell in this process: the app on port 0, real sockets on 127.0.0.1.

These reach app.py, tcp.py, udp.py and dispatch.py in the test process (the end-to-end
tests run the server as a child, where no assertion can see inside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from forkwire.protocol import (
    Ack,
    Bye,
    Calc,
    CalcResult,
    ClientConnection,
    ClientDatagrams,
    Error,
    ErrorCode,
    Hello,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Reply,
    Request,
    Stat,
    State,
    Stats,
    StatsResult,
    Welcome,
    encode_frame,
    pack,
)
from forkwire.server.app import App
from forkwire.server.config import Settings
from forkwire.server.storage import AddResult
from forkwire.server.storage.memory import MemoryRepository

TIMEOUT = 10.0


class Peer:
    """A test client: a socket and the protocol's own client object, nothing else."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conversation = ClientConnection()

    @classmethod
    async def connect(cls, port: int) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, *messages: Request) -> None:
        for message in messages:
            self.writer.write(self.conversation.send(message))
        await self.writer.drain()

    async def recv(self) -> Reply:
        async with asyncio.timeout(TIMEOUT):
            while (message := self.conversation.next_event()) is None:
                if self.conversation.state is State.CLOSED:
                    raise ConnectionError("the server closed the connection")
                self.conversation.receive_data(await self.reader.read(65536))
            return message

    async def closed(self) -> bool:
        """True once the server has closed its side (EOF), within the timeout."""
        async with asyncio.timeout(TIMEOUT):
            while data := await self.reader.read(65536):
                self.conversation.receive_data(data)
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[App]:
    """The app serving in this event loop until the block ends, then shut down."""
    app = App(settings)
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    started = asyncio.create_task(app.started.wait())
    done, _ = await asyncio.wait({serving, started}, timeout=TIMEOUT, return_when="FIRST_COMPLETED")
    if serving in done:
        serving.result()  # raises why it did not start
    assert started in done, "the app did not start"
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)


def settings(tmp_path: Path, *db: str, **overrides: Any) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        db=db or (f"sqlite:///{tmp_path / 'store.sqlite'}",),
        workers=2,
        grace=5.0,
        commit_interval=0.0,
        **overrides,
    )


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running(settings(tmp_path)) as serving:
        yield serving


@pytest.fixture
async def peer(app: App) -> AsyncIterator[Peer]:
    assert app.port is not None
    connected = await Peer.connect(app.port)
    yield connected
    await connected.close()


def readings(sensor: str, seqs: Sequence[int]) -> ReadingsMsg:
    return ReadingsMsg(items=[Reading(sensor=sensor, seq=s, ts=float(s), value=s) for s in seqs])


async def test_hello_gets_the_servers_welcome(app: App, peer: Peer) -> None:
    """The welcome names this server, its frame limit and the interpreter's limits."""
    await peer.send(Hello(client="test"))
    welcome = await peer.recv()
    assert isinstance(welcome, Welcome)
    assert welcome.server.startswith("forkwire/")
    assert welcome.max_frame == app.settings.max_frame
    assert welcome.limits["workers"] == 2


async def test_hello_of_another_version_is_refused(peer: Peer) -> None:
    """A client asking for version 9 is told unsupported_version, and can go on in v1."""
    await peer.send(Hello(version=9), Stats())
    error = await peer.recv()
    assert isinstance(error, Error)
    assert error.code == ErrorCode.UNSUPPORTED_VERSION
    assert isinstance(await peer.recv(), StatsResult)


async def test_a_resent_batch_is_acked_with_its_duplicates_counted(peer: Peer) -> None:
    """The ack of a resend names the readings again and says how many were duplicates."""
    await peer.send(readings("s", [0, 1, 2]))
    first = await peer.recv()
    assert first == Ack(acked={"s": [(0, 2)]}, duplicates=0)
    await peer.send(readings("s", [1, 2, 3]))
    second = await peer.recv()
    assert second == Ack(acked={"s": [(1, 3)]}, duplicates=2)


async def test_a_conflicting_value_is_refused_not_acked(app: App, peer: Peer) -> None:
    """Same key, another value: error conflict naming the key; the rest can be resent."""
    await peer.send(readings("s", [0, 1]))
    assert isinstance(await peer.recv(), Ack)
    changed = ReadingsMsg(
        items=[
            Reading(sensor="s", seq=1, ts=1.0, value=99),
            Reading(sensor="s", seq=2, ts=2.0, value=2),
        ]
    )
    await peer.send(changed)
    error = await peer.recv()
    assert isinstance(error, Error)
    assert error.code == ErrorCode.CONFLICT
    assert error.keys == {"s": [(1, 1)]}
    await peer.send(readings("s", [2]))  # the good one again: stored already, acked now
    assert await peer.recv() == Ack(acked={"s": [(2, 2)]}, duplicates=1)
    await peer.send(Stats())
    stats = await peer.recv()
    assert isinstance(stats, StatsResult)
    assert stats.counters[Stat.READINGS_CONFLICT] == 1


async def test_two_producers_of_one_sensor_are_both_stored(app: App, peer: Peer) -> None:
    """A fresh outbox reusing a sensor name is a new producer: its seq 0 is stored too."""
    items = [Reading(sensor="s", seq=q, ts=float(q), value=q) for q in range(3)]
    await peer.send(ReadingsMsg(producer="first", items=items))
    assert await peer.recv() == Ack(acked={"s": [(0, 2)]})
    await peer.send(ReadingsMsg(producer="second", items=items))
    assert await peer.recv() == Ack(acked={"s": [(0, 2)]}, duplicates=0)
    assert app.repository is not None
    stored = await app.repository.query()
    assert sorted((r.producer, r.seq) for r in stored) == [
        (p, q) for p in ("first", "second") for q in range(3)
    ]


async def test_readings_without_ack_get_no_ack(app: App, peer: Peer) -> None:
    """ack: false is stored but answered with nothing: the next reply is the stats."""
    await peer.send(ReadingMsg(sensor="quiet", seq=0, ts=1.0, value=1, ack=False))
    await peer.send(readings("loud", [0]))
    ack = await peer.recv()
    assert ack == Ack(acked={"loud": [(0, 0)]})  # not the quiet one's
    await peer.send(Stats())
    stats = await peer.recv()
    assert isinstance(stats, StatsResult)
    assert stats.counters[Stat.READINGS_STORED] == 2
    assert app.repository is not None
    stored = await app.repository.query()
    assert sorted(r.sensor for r in stored) == ["loud", "quiet"]


async def test_calc_is_answered_by_a_child(peer: Peer) -> None:
    """A job comes back in order, errors per expression, from a child process."""
    await peer.send(Calc(id=7, ops=["1 + 2", "1 / 0", "7 - 2 - 1"]))
    result = await peer.recv()
    assert isinstance(result, CalcResult)
    assert result.results == [3, None, 4]
    assert [(e.index, e.code) for e in result.errors] == [(1, "division_by_zero")]


async def test_bye_comes_after_every_reply_and_closes(peer: Peer) -> None:
    """bye is answered last, after the job sent before it, and the server closes."""
    await peer.send(Calc(id=1, ops=["2 * 3"]), Bye())
    assert isinstance(await peer.recv(), CalcResult)
    assert await peer.recv() == Bye()
    assert await peer.closed()


async def test_a_bad_frame_is_answered_and_counted(app: App, peer: Peer) -> None:
    """Bad JSON gets an error, the connection goes on, frames_rejected counts it."""
    peer.writer.write(encode_frame(b"{not json"))
    await peer.send(Stats())
    error = await peer.recv()
    assert isinstance(error, Error)
    assert error.code == ErrorCode.BAD_JSON
    stats = await peer.recv()
    assert isinstance(stats, StatsResult)
    assert stats.counters[Stat.FRAMES_REJECTED] == 1
    assert stats.counters[Stat.FRAMES_IN] == 2


async def test_an_oversized_frame_closes_the_connection(peer: Peer) -> None:
    """A header over max_frame is answered frame_too_large and the server closes."""
    peer.writer.write((2**31).to_bytes(4, "big"))
    error = await peer.recv()
    assert isinstance(error, Error)
    assert error.code == ErrorCode.FRAME_TOO_LARGE
    assert await peer.closed()


class FailingRepository(MemoryRepository):
    async def add_many(self, readings: Sequence[Reading], received_at: float) -> AddResult:
        raise OSError("disk full")


async def test_a_storage_failure_is_refused_and_closes(app: App, peer: Peer) -> None:
    """Nothing is acked when the store fails: storage_unavailable, then the server closes."""
    assert app.dispatcher.writer is not None
    app.dispatcher.writer.repo = FailingRepository()
    await peer.send(readings("s", [0]))
    error = await peer.recv()
    assert isinstance(error, Error)
    assert error.code == ErrorCode.STORAGE_UNAVAILABLE
    assert await peer.closed()


async def test_udp_answers_requests_and_drops_what_is_not_a_frame(app: App) -> None:
    """Over UDP: hello gets the welcome, stats its counters; a cut datagram nothing."""
    assert app.udp_port is not None
    rules = ClientDatagrams()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", app.udp_port))
        await loop.sock_sendall(sock, pack(Stats())[:-1])
        await loop.sock_sendall(sock, pack(Hello()))
        async with asyncio.timeout(TIMEOUT):
            welcome = rules.receive(await loop.sock_recv(sock, 65536))
        assert isinstance(welcome, Welcome)
        await loop.sock_sendall(sock, pack(Stats()))
        async with asyncio.timeout(TIMEOUT):
            stats = rules.receive(await loop.sock_recv(sock, 65536))
    assert isinstance(stats, StatsResult)
    assert stats.counters[Stat.UDP_DATAGRAMS_MALFORMED] == 1
    assert stats.counters[Stat.UDP_DATAGRAMS_RECEIVED] == 3


async def test_shutdown_answers_the_job_in_flight(tmp_path: Path) -> None:
    """Stopping while a job runs still delivers its answer before the connection closes."""
    async with running(settings(tmp_path)) as app:
        assert app.port is not None
        peer = await Peer.connect(app.port)
        await peer.send(Calc(id=1, ops=["1 + 1"] * 50_000))
        await asyncio.sleep(0.05)  # the job is in its child now (50k lines take ~50 ms)
    result = await peer.recv()
    assert isinstance(result, CalcResult)
    assert result.results[:2] == [2, 2]
    await peer.close()


async def test_sinks_get_a_copy_of_what_the_store_committed(tmp_path: Path) -> None:
    """A second --db is a sink: once the store acked, the readings reach it too."""
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    mirror = tmp_path / "mirror.csv"
    async with running(settings(tmp_path, store, f"csv:///{mirror}")) as app:
        assert app.port is not None
        peer = await Peer.connect(app.port)
        await peer.send(readings("s", [0, 1]))
        assert isinstance(await peer.recv(), Ack)
        await peer.send(readings("s", [1]))  # a duplicate: not copied again
        assert isinstance(await peer.recv(), Ack)
        await peer.close()
    with mirror.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["sensor"], r["seq"]) for r in rows] == [("s", "0"), ("s", "1")]
