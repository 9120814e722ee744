"""UDP's unacked readings are stored in batches: every reading once, the counters exact.

The endpoint is fed the way the event loop feeds it: many ``datagram_received`` calls in one
turn, then the loop runs. The store is the app's real SQLite file.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from test_app import FailingRepository, running, settings

from forkwire.protocol import (
    Ack,
    ClientDatagrams,
    Error,
    ErrorCode,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Reply,
    Stat,
    pack,
)
from forkwire.server.app import App
from forkwire.server.dispatch import Ack as DispatchAck
from forkwire.server.udp import UdpEndpoint

TIMEOUT = 10.0
A, B = ("127.0.0.1", 40001), ("127.0.0.1", 40002)


class Wire:
    """A transport that keeps what the endpoint sends, per address."""

    def __init__(self) -> None:
        self.sent: list[tuple[Reply, Any]] = []
        self.rules = ClientDatagrams()

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((self.rules.receive(data), addr))

    def is_closing(self) -> bool:
        return False


def endpoint_of(app: App) -> tuple[UdpEndpoint, Wire, list[int]]:
    """An endpoint on the app's dispatcher, with its wire and the sizes of its ingest calls."""
    endpoint = UdpEndpoint(app.dispatcher)
    wire = Wire()
    endpoint.connection_made(wire)  # type: ignore[arg-type]
    calls: list[int] = []
    ingest = app.dispatcher.ingest

    async def counted(readings: Sequence[Reading], producer: str | None = None) -> DispatchAck:
        calls.append(len(readings))
        return await ingest(readings, producer)

    app.dispatcher.ingest = counted  # type: ignore[method-assign]
    return endpoint, wire, calls


async def settled(endpoint: UdpEndpoint) -> None:
    async with asyncio.timeout(TIMEOUT):
        await asyncio.sleep(0)  # the batch of this turn becomes a task
        while endpoint.tasks:
            await asyncio.gather(*endpoint.tasks)


def one(sensor: str, seq: int, value: int = 0, *, producer: str | None = None) -> bytes:
    return pack(
        ReadingMsg(sensor=sensor, seq=seq, ts=1.0, value=value, ack=False, producer=producer)
    )


def rows(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT sensor, producer, seq FROM readings").fetchall()


async def test_unacked_datagrams_of_one_turn_are_stored_once_in_few_calls(
    tmp_path: Path,
) -> None:
    """830 readings in 381 datagrams of one turn (a repeat and a second producer among
    them): each stored once, the counters exact, no reply, a few ingest calls."""
    async with running(settings(tmp_path)) as app:
        endpoint, wire, calls = endpoint_of(app)
        datagrams = [one("a", seq) for seq in range(300)]
        datagrams += [
            pack(
                ReadingsMsg(
                    items=[Reading(sensor="b", seq=s, ts=1.0, value=s) for s in range(n, n + 10)],
                    ack=False,
                )
            )
            for n in range(0, 500, 10)
        ]
        datagrams += [one("a", seq) for seq in range(20)]  # resent: duplicates
        datagrams += [one("a", seq, producer="p2") for seq in range(10)]  # another producer
        for datagram in datagrams:
            endpoint.datagram_received(datagram, A)
        await settled(endpoint)
        counters = app.dispatcher.counters
        assert counters[Stat.READINGS_RECEIVED] == 830
        assert counters[Stat.READINGS_STORED] == 810
        assert counters[Stat.READINGS_DUPLICATE] == 20
        assert counters[Stat.UDP_DATAGRAMS_RECEIVED] == len(datagrams) == 380
        assert counters[Stat.UDP_DATAGRAMS_DROPPED_BUSY] == 0
        assert sum(calls) == 830
        assert len(calls) == 2  # one per producer: the whole turn is one batch
        assert wire.sent == []
    stored = rows(tmp_path / "store.sqlite")
    assert len(stored) == len(set(stored)) == 810
    assert {(s, p) for s, p, _ in stored} == {("a", ""), ("b", ""), ("a", "p2")}


async def test_a_large_turn_is_cut_into_batches_of_commit_batch(tmp_path: Path) -> None:
    """A turn with more readings than one commit holds goes to the writer in pieces."""
    async with running(settings(tmp_path, commit_batch=100)) as app:
        endpoint, _, calls = endpoint_of(app)
        for seq in range(450):
            endpoint.datagram_received(one("a", seq), A)
        await settled(endpoint)
        assert calls == [100, 100, 100, 100, 50]
        assert app.dispatcher.counters[Stat.READINGS_STORED] == 450
    assert len(rows(tmp_path / "store.sqlite")) == 450


async def test_past_the_queue_bound_datagrams_are_dropped_busy_and_counted(
    tmp_path: Path,
) -> None:
    """At most 8 commits' worth of unacked readings wait; the rest of a burst is dropped
    busy, counted, and what was queued is stored in full, two batches at a time."""
    async with running(settings(tmp_path, commit_batch=10)) as app:
        endpoint, _, calls = endpoint_of(app)
        for seq in range(200):
            endpoint.datagram_received(one("a", seq), A)
        await settled(endpoint)
        counters = app.dispatcher.counters
        assert counters[Stat.UDP_DATAGRAMS_DROPPED_BUSY] == 120
        assert counters[Stat.READINGS_STORED] == counters[Stat.READINGS_RECEIVED] == 80
        assert calls == [10] * 8
        # The queue is empty again: a new burst is taken in full.
        for seq in range(200, 230):
            endpoint.datagram_received(one("a", seq), A)
        await settled(endpoint)
        assert counters[Stat.READINGS_STORED] == 110
    assert sorted(seq for _, _, seq in rows(tmp_path / "store.sqlite")) == [
        *range(80),
        *range(200, 230),
    ]


async def test_acked_datagrams_still_get_their_own_ack(tmp_path: Path) -> None:
    """ack: true is answered per datagram, beside a batch of unacked readings."""
    async with running(settings(tmp_path)) as app:
        endpoint, wire, _ = endpoint_of(app)
        endpoint.datagram_received(one("a", 0), A)
        endpoint.datagram_received(pack(ReadingMsg(sensor="a", seq=1, ts=1.0, value=0)), B)
        await settled(endpoint)
        assert len(wire.sent) == 1
        ack, addr = wire.sent[0]
        assert isinstance(ack, Ack)
        assert addr == B
        assert ack.acked == {"a": [(1, 1)]}
        assert app.dispatcher.counters[Stat.READINGS_STORED] == 2


async def test_a_conflict_answers_only_the_datagram_that_conflicts(tmp_path: Path) -> None:
    """One batch, one conflicting datagram: its sender gets conflict with its key only;
    the other datagram's reading is stored and nothing is sent to its sender."""
    async with running(settings(tmp_path)) as app:
        endpoint, wire, _ = endpoint_of(app)
        endpoint.datagram_received(one("a", 0, value=1), A)
        await settled(endpoint)
        endpoint.datagram_received(one("a", 0, value=2), A)  # another value: conflict
        endpoint.datagram_received(one("a", 1, value=1), B)
        await settled(endpoint)
        assert len(wire.sent) == 1
        error, addr = wire.sent[0]
        assert addr == A
        assert isinstance(error, Error)
        assert error.code == ErrorCode.CONFLICT
        assert error.keys == {"a": [(0, 0)]}
        assert app.dispatcher.counters[Stat.READINGS_CONFLICT] == 1
    assert sorted(rows(tmp_path / "store.sqlite")) == [("a", "", 0), ("a", "", 1)]


async def test_a_storage_failure_answers_each_unacked_datagram(tmp_path: Path) -> None:
    """As one by one: each datagram of the failed batch gets storage_unavailable."""
    async with running(settings(tmp_path)) as app:
        endpoint, wire, _ = endpoint_of(app)
        assert app.dispatcher.writer is not None
        app.dispatcher.writer.repo = FailingRepository()
        endpoint.datagram_received(one("a", 0), A)
        endpoint.datagram_received(one("a", 1), B)
        await settled(endpoint)
        assert sorted(addr for _, addr in wire.sent) == [A, B]
        for error, _ in wire.sent:
            assert isinstance(error, Error)
            assert error.code == ErrorCode.STORAGE_UNAVAILABLE


async def test_stopping_hands_the_batch_of_this_turn_to_a_task(tmp_path: Path) -> None:
    """Shutdown waits for the endpoint's tasks: the batch not yet handed over is one."""
    async with running(settings(tmp_path)) as app:
        endpoint, _, _ = endpoint_of(app)
        endpoint.datagram_received(one("a", 0), A)
        endpoint.stop_accepting()
        assert len(endpoint.tasks) == 1
        endpoint.datagram_received(one("a", 1), A)  # refused: stopping
        await settled(endpoint)
        assert app.dispatcher.counters[Stat.READINGS_STORED] == 1
        assert app.dispatcher.counters[Stat.UDP_DATAGRAMS_REFUSED_STOPPING] == 1


async def test_unacked_readings_over_a_real_socket_are_all_stored(tmp_path: Path) -> None:
    """2,000 datagrams sent at once to the app's UDP port: all stored, once each."""
    async with running(settings(tmp_path, udp_rcvbuf=4 * 1024 * 1024)) as app:
        assert app.udp_port is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for seq in range(2000):
                sock.sendto(one("a", seq), ("127.0.0.1", app.udp_port))
        counters = app.dispatcher.counters
        async with asyncio.timeout(TIMEOUT):
            while counters[Stat.READINGS_STORED] < 2000:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.01)
        assert counters[Stat.READINGS_RECEIVED] == 2000
        assert counters[Stat.READINGS_DUPLICATE] == 0
    assert len(set(rows(tmp_path / "store.sqlite"))) == 2000


def rmem_max() -> int | None:
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(rmem_max() is None, reason="no net.core.rmem_max to read (not Linux)")
async def test_a_receive_buffer_over_the_kernels_cap_is_logged_as_capped(
    tmp_path: Path,
) -> None:
    """Asking twice net.core.rmem_max: the kernel grants less, the server says so."""
    cap = rmem_max()
    assert cap is not None
    with structlog.testing.capture_logs() as logs:
        async with running(settings(tmp_path, udp_rcvbuf=2 * cap)) as app:
            granted = app.dispatcher.counters[Stat.UDP_RCVBUF]
    assert granted == 2 * cap  # Linux doubles what it grants, up to twice the cap
    (capped,) = [line for line in logs if line["event"] == "udp_rcvbuf_capped"]
    assert capped["requested"] == 2 * cap
    assert capped["granted"] == granted


async def test_the_default_receive_buffer_is_4_mib_asked(tmp_path: Path) -> None:
    """Without --udp-rcvbuf the server asks for 4 MiB (the kernel may grant less)."""
    assert settings(tmp_path).udp_rcvbuf == 4 * 1024 * 1024
