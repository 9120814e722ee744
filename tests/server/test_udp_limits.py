"""UDP's bounds: requests in flight, TCP-only requests, and the size of what is reflected."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest
from test_app import Peer, running, settings
from test_shutdown import hang_flood, server

from forkwire.client.local import LocalServer
from forkwire.protocol import (
    MAX_DATAGRAM,
    Calc,
    CalcResult,
    ClientDatagrams,
    Error,
    ErrorCode,
    Hello,
    Reply,
    Report,
    Request,
    Series,
    ServerDatagrams,
    Stat,
    Stats,
    StatsResult,
    Welcome,
    encode_frame,
    pack,
)

#: Server memory a UDP flood may add; unbounded, 5 s of flood took 2.1 GB.
RSS_BOUND = 128 * 1024 * 1024


def flood(port: int, stop: threading.Event, sent: list[int]) -> None:
    """Send calc datagrams to ``port`` as fast as one thread can, until ``stop``."""
    datagrams = [pack(Calc(id=n, ops=["2 ** 10", "1 / 3"])) for n in range(256)]
    count = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while not stop.is_set():
            for datagram in datagrams:
                try:
                    sock.sendto(datagram, ("127.0.0.1", port))
                    count += 1
                except (BlockingIOError, ConnectionRefusedError):
                    time.sleep(0.0005)
    sent.append(count)


async def test_a_udp_flood_is_dropped_past_the_bound_while_tcp_is_served() -> None:
    """Thousands of calc datagrams: at most udp_max_inflight are answered at once, the rest
    are dropped and counted, RSS stays bounded, and a TCP client's calc is answered."""
    server = await LocalServer.start("--db", "memory://", "--udp-max-inflight", "8")
    try:
        rss_before = psutil.Process(server.pid).memory_info().rss
        stop, sent = threading.Event(), []
        flooder = threading.Thread(target=flood, args=(server.udp_port, stop, sent))
        flooder.start()
        try:
            await asyncio.sleep(0.5)  # the flood is on
            peer = await Peer.connect(server.port)
            latencies = []
            for job in range(5):
                asked = time.monotonic()
                await peer.send(Calc(id=job, ops=["6 * 7"]))
                reply = await peer.recv()
                latencies.append(time.monotonic() - asked)
                assert isinstance(reply, CalcResult)
                assert reply.results == [42]
            rss_during = psutil.Process(server.pid).memory_info().rss
        finally:
            stop.set()
            await asyncio.to_thread(flooder.join)
        await peer.send(Stats())
        stats = await peer.recv()
        await peer.close()
        assert isinstance(stats, StatsResult)
        counters = stats.counters
        assert sent[0] > 2000
        assert counters[Stat.UDP_DATAGRAMS_DROPPED_BUSY] > 0
        assert counters[Stat.UDP_REQUESTS_INFLIGHT] <= 8
        assert rss_during - rss_before < RSS_BOUND
        assert max(latencies) < 3.0, latencies
    finally:
        assert await server.stop() == 0


async def exchange(port: int, request: bytes, wait: float = 10) -> tuple[bytes, Reply]:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, request)
        async with asyncio.timeout(wait):
            datagram = await loop.sock_recv(sock, MAX_DATAGRAM)
    return datagram, ClientDatagrams().receive(datagram)


async def test_report_and_series_are_tcp_only(tmp_path: Path) -> None:
    """Over UDP a report or series is refused with a short bad_message, never computed."""
    async with running(settings(tmp_path)) as app:
        assert app.udp_port is not None
        requests: list[Request] = [Report(), Series(sensor="s")]
        for request in requests:
            datagram, reply = await exchange(app.udp_port, pack(request))
            assert isinstance(reply, Error)
            assert reply.code == ErrorCode.BAD_MESSAGE
            assert "TCP only" in reply.message
            assert len(datagram) < 128
        stats = app.dispatcher.stats().counters
        assert stats[Stat.UDP_DATAGRAMS_REJECTED] == 2


async def test_a_udp_reply_is_no_larger_than_its_request_or_the_bound(tmp_path: Path) -> None:
    """Forty syntax errors would answer ~2.6 KB for ~200 bytes: reply_too_large instead;
    the same answer is sent when the request itself was as large; hello is answered."""
    async with running(settings(tmp_path, udp_max_reply=1024)) as app:
        assert app.udp_port is not None
        datagram, welcome = await exchange(app.udp_port, pack(Hello()))
        assert isinstance(welcome, Welcome)
        assert welcome.limits["udp_max_reply"] == 1024
        assert welcome.limits["udp_max_inflight"] == app.settings.udp_max_inflight

        small = pack(Calc(id=7, ops=["x"] * 40))
        datagram, refused = await exchange(app.udp_port, small)
        assert isinstance(refused, Error)
        assert (refused.code, refused.ref) == (ErrorCode.REPLY_TOO_LARGE, 7)
        assert len(datagram) <= 1024

        # The same job padded to more bytes than its answer: answered in full.
        padded = pack(Calc(id=8, ops=["x" + " " * 80] * 40))
        datagram, answered = await exchange(app.udp_port, padded)
        assert isinstance(answered, CalcResult)
        assert [e.code for e in answered.errors] == ["syntax"] * 40
        assert 1024 < len(datagram) <= len(padded)


def test_the_reply_bound_is_the_larger_of_request_and_max_reply() -> None:
    welcome = Welcome(server="test", max_frame=65536)
    rules = ServerDatagrams(welcome, max_reply=512)
    big = CalcResult(id=1, results=[10**600])
    assert len(pack(big)) > 512
    refused = ClientDatagrams().receive(rules.reply(big, ref=1))
    assert isinstance(refused, Error)
    assert refused.code == ErrorCode.REPLY_TOO_LARGE
    assert rules.reply(big, ref=1, request_size=len(pack(big))) == pack(big)
    huge = CalcResult(id=2, results=[10**4000] * 20)
    refused = ClientDatagrams().receive(rules.reply(huge, request_size=10**6))
    assert isinstance(refused, Error), "never more than one datagram"


async def test_with_udp_max_reply_0_no_reply_is_larger_than_its_request(tmp_path: Path) -> None:
    """The strict rule: a padded hello gets the welcome, a bare one nothing (counted); a
    calc gets its answer only if its request was at least as large."""
    async with running(settings(tmp_path, udp_max_reply=0)) as app:
        assert app.udp_port is not None
        padded_hello = encode_frame(b'{"type": "hello"' + b" " * 600 + b"}")
        datagram, welcome = await exchange(app.udp_port, padded_hello)
        assert isinstance(welcome, Welcome)
        assert len(datagram) <= len(padded_hello)
        padded_calc = pack(Calc(id=3, ops=["1 / 0" + " " * 200]))
        datagram, answer = await exchange(app.udp_port, padded_calc)
        assert isinstance(answer, CalcResult)
        assert len(datagram) <= len(padded_calc)
        for bare in (pack(Hello()), pack(Calc(id=4, ops=["1/0"]))):
            with pytest.raises(TimeoutError):
                await exchange(app.udp_port, bare, wait=0.5)
        counters = app.dispatcher.stats().counters
        assert counters[Stat.UDP_REPLIES_SUPPRESSED] == 2


async def test_udp_jobs_never_take_every_worker() -> None:
    """A flood of UDP jobs that never end holds at most half the workers: a TCP client's
    calc still gets a worker and its answer (before, it queued behind the flood forever)."""
    async with server("--workers", "2", "--job-timeout", "30") as (_, port):
        stop = threading.Event()
        flooder = threading.Thread(target=hang_flood, args=(port, stop))
        flooder.start()
        try:
            peer = await Peer.connect(port)
            async with asyncio.timeout(10):
                while True:  # until UDP's slots are taken and its requests queue
                    await peer.send(Stats())
                    stats = await peer.recv()
                    assert isinstance(stats, StatsResult)
                    if stats.counters.get(Stat.UDP_DATAGRAMS_DROPPED_BUSY, 0) > 100:
                        break
                    await asyncio.sleep(0.05)
            assert stats.counters[Stat.JOBS_RUNNING] == 1
            await peer.send(Calc(id=1, ops=["6 * 7"]))
            reply = await peer.recv()
            assert isinstance(reply, CalcResult)
            assert reply.results == [42]
            await peer.close()
        finally:
            stop.set()
            await asyncio.to_thread(flooder.join)
