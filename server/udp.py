"""The UDP listener: a thin shell around ``ServerDatagrams``.

Like aioquic's protocols, ``datagram_received`` never raises. What a datagram means, and
which get an answer, is the protocol's (``forkwire.protocol.datagram``); requests go to
the same ``Dispatcher`` as TCP's.

UDP has no flow control to push back with, so the endpoint bounds its own work: at most
``udp_max_inflight`` requests are being answered at once, and a datagram arriving past
that is dropped unread and counted (``udp_datagrams_dropped_busy``), before any parsing,
so a flood costs a counter increment per datagram rather than a task and a queued job.
And UDP's calc jobs take at most half the job runner's worker slots (at least one): the
rest wait here, not in the runner's queue, so a TCP client's job never queues behind a
flood of datagrams' jobs.

Readings sent with ``ack: false`` are not answered one by one: they queue here and go to
the writer in batches of up to a commit's worth, from one task at a time (two when a full
batch waits), each taking all that queued while the one before it was stored, so the
batches grow exactly as fast as the store is slow. A task, a dispatcher call and a writer
future per datagram is what capped UDP ingest at a few thousand readings/s:
``udp_max_inflight`` tasks each waiting out a commit, the rest dropped busy, and the loop
too slow to empty the kernel's receive buffer. The queue holds at most
``UNACKED_COMMITS`` commits' worth; a datagram past that is dropped busy and counted.
Storage is the same either way: the writer merges submissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import structlog

from forkwire.protocol import (
    MAX_DATAGRAM,
    Calc,
    DatagramRequest,
    Dropped,
    Error,
    ErrorCode,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Rejected,
    Request,
    ServerDatagrams,
    Stat,
    Unauthenticated,
)
from forkwire.server import dispatch
from forkwire.server.dispatch import Dispatcher
from forkwire.server.logs import RateLimitedLog

log = structlog.get_logger("forkwire.udp")

Address = Any  # (host, port) for IPv4, (host, port, flow, scope) for IPv6

#: Datagrams the endpoint reads itself per loop turn, beyond those the loop delivers
#: (asyncio's loop delivers one per turn; uvloop's libuv up to 32 a poll).
DRAIN_DATAGRAMS: Final = 256
#: Unacked readings per submission to the writer, at most (and at most ``commit_batch``):
#: one submission never needs two commits.
BATCH_READINGS: Final = 1000
#: Tasks storing unacked readings at once: one whose batch commits, and one with a full
#: batch queued behind it.
UNACKED_PIPELINE: Final = 2
#: Unacked readings queued or being stored, in commits' worth: past it datagrams are
#: dropped busy. At 50,000 readings/s and 1,000-reading commits, 160 ms of readings.
UNACKED_COMMITS: Final = 8


@dataclass(slots=True)
class _Unacked:
    """One ``ack: false`` datagram waiting for its batch: what an error reply needs."""

    readings: list[Reading]
    producer: str | None
    addr: Address
    size: int


class UdpEndpoint(asyncio.DatagramProtocol):
    """Answers datagrams; counts what it drops in the dispatcher's counters."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.counters = dispatcher.counters
        settings = dispatcher.settings
        self.rules = ServerDatagrams(
            dispatcher.welcome(),
            max_frame=settings.max_frame,
            max_reply=settings.udp_max_reply,
            token=dispatcher.token,
        )
        self.max_inflight = settings.udp_max_inflight
        self._job_slots = asyncio.Semaphore(max(1, dispatcher.runner.workers // 2))
        self._unauthenticated_log = RateLimitedLog(log, every=10.0)
        #: Unacked readings datagrams waiting to be stored, and how many readings they hold.
        self._batch: deque[_Unacked] = deque()
        self._batch_readings = 0  # queued here, plus held by the storing tasks
        self._batch_limit = min(BATCH_READINGS, settings.commit_batch)
        self._batch_bound = UNACKED_COMMITS * self._batch_limit
        self._queued = 0  # readings in the queue alone
        self._storing = 0  # tasks storing unacked readings
        self._flush_due = False
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True
        dispatcher.stats_sources.append(self._gauges)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, though it acts like one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.counters[Stat.UDP_DATAGRAMS_RECEIVED] += 1
        if not self._accepting:
            self.counters[Stat.UDP_DATAGRAMS_REFUSED_STOPPING] += 1
            return
        if len(self._tasks) >= self.max_inflight:
            self.counters[Stat.UDP_DATAGRAMS_DROPPED_BUSY] += 1
            return
        event, reply = self.rules.receive(data)
        if isinstance(event, Unauthenticated):
            # Never answered: a reply to a forged source would make us a reflector.
            self.counters[Stat.UDP_DATAGRAMS_UNAUTHENTICATED] += 1
            self._unauthenticated_log.info(
                "udp_unauthenticated", key=event.reason, reason=event.reason, peer=_peer(addr)
            )
            return
        if isinstance(event, Dropped):
            self.counters[Stat.UDP_DATAGRAMS_MALFORMED] += 1
        elif isinstance(event, Rejected):
            self.counters[Stat.UDP_DATAGRAMS_REJECTED] += 1
        elif isinstance(event, DatagramRequest):
            if isinstance(event.message, ReadingMsg | ReadingsMsg) and not event.message.ack:
                self._add_unacked(event.message, addr, len(data))
                return
            task = asyncio.create_task(self._answer(event.message, addr, len(data)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if reply is not None:
            self._send(reply, addr)
        elif not isinstance(event, Dropped):
            self.counters[Stat.UDP_REPLIES_SUPPRESSED] += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier reply: the sender went away. Count it.
        self.counters[Stat.UDP_SEND_ERRORS] += 1

    async def _answer(self, request: Request, addr: Address, size: int) -> None:
        if isinstance(request, Calc):
            async with self._job_slots:
                reply = await self.dispatcher.answer(request)
        else:
            reply = await self.dispatcher.answer(request)
        if reply is not None:
            if isinstance(reply, Error):
                self.dispatcher.tally["error", reply.code] += 1
            ref = getattr(request, "id", None)
            datagram = self.rules.reply(reply, ref=ref, request_size=size)
            if datagram is None:
                self.counters[Stat.UDP_REPLIES_SUPPRESSED] += 1
            else:
                self._send(datagram, addr)

    def _add_unacked(self, message: ReadingMsg | ReadingsMsg, addr: Address, size: int) -> None:
        readings: list[Reading] = (
            list(message.items) if isinstance(message, ReadingsMsg) else [message]
        )
        if self._batch_readings and self._batch_readings + len(readings) > self._batch_bound:
            self.counters[Stat.UDP_DATAGRAMS_DROPPED_BUSY] += 1
            return
        self._batch.append(_Unacked(readings, message.producer, addr, size))
        self._batch_readings += len(readings)
        self._queued += len(readings)
        if not self._flush_due:
            # After the datagrams this turn of the loop delivers, not after the first.
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_unacked)

    def _flush_unacked(self, *, everything: bool = False) -> None:
        """Hand queued readings to storing tasks, while fewer than ``UNACKED_PIPELINE``
        run (``everything``: all of them, now, for shutdown)."""
        self._flush_due = False
        while self._batch and (
            everything
            or not self._storing
            # A second task only for a full batch: one taken early stays small, and so
            # would the commit it shares.
            or (self._storing < UNACKED_PIPELINE and self._queued >= self._batch_limit)
        ):
            batch = [self._batch.popleft()]
            size = len(batch[0].readings)
            while self._batch and size + len(self._batch[0].readings) <= self._batch_limit:
                batch.append(self._batch.popleft())
                size += len(batch[-1].readings)
            self._queued -= size
            self._storing += 1
            task = asyncio.create_task(self._store_unacked(batch, size))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _store_unacked(self, batch: list[_Unacked], size: int) -> None:
        try:
            await self._store_batch(batch)
        finally:
            self._storing -= 1
            self._batch_readings -= size
            if self._batch and not self._flush_due:
                self._flush_unacked()

    async def _store_batch(self, batch: list[_Unacked]) -> None:
        by_producer: dict[str | None, list[_Unacked]] = {}
        for datagram in batch:
            by_producer.setdefault(datagram.producer, []).append(datagram)
        for producer, datagrams in by_producer.items():
            readings = [reading for datagram in datagrams for reading in datagram.readings]
            try:
                await self.dispatcher.ingest(readings, producer)
            except Exception as exc:  # each datagram gets the error its own request would
                if not isinstance(exc, dispatch.StorageUnavailable | dispatch.Conflict):
                    log.exception("udp_readings_failed", readings=len(readings))
                for datagram in datagrams:
                    error = _unacked_error(exc, datagram)
                    if error is None:
                        continue
                    reply = self.rules.reply(error, request_size=datagram.size)
                    if reply is None:
                        self.counters[Stat.UDP_REPLIES_SUPPRESSED] += 1
                    else:
                        self._send(reply, datagram.addr)

    def _gauges(self) -> dict[str, int]:
        return {Stat.UDP_REQUESTS_INFLIGHT: len(self._tasks)}

    def _send(self, datagram: bytes, addr: Address) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.sendto(datagram, addr)
        self.counters[Stat.UDP_DATAGRAMS_SENT] += 1

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """The requests being answered now (at most ``max_inflight``)."""
        return self._tasks

    def stop_accepting(self) -> None:
        """Shutdown: drop new datagrams (counted) but keep the socket to answer the old."""
        self._accepting = False
        self._flush_unacked(everything=True)  # so shutdown waits for the queued readings


def _unacked_error(exc: Exception, datagram: _Unacked) -> Error | None:
    """The error ``Dispatcher.answer`` gives one datagram's readings for a failed batch;
    None when that datagram's readings were not the trouble (another's conflicted)."""
    if isinstance(exc, dispatch.StorageUnavailable):
        return Error(
            code=ErrorCode.STORAGE_UNAVAILABLE, message=str(exc), retry_after=exc.retry_after
        )
    if isinstance(exc, dispatch.Conflict):
        owner = datagram.producer or ""
        clashing = [
            (reading.sensor, owner, reading.seq)
            for reading in datagram.readings
            if any(first <= reading.seq <= last for first, last in exc.keys.get(reading.sensor, []))
        ]
        if not clashing:
            return None
        mine = dispatch.Conflict(clashing)
        return Error(code=ErrorCode.CONFLICT, message=str(mine), keys=mine.keys)
    return Error(code=ErrorCode.INTERNAL_ERROR, message="the readings request failed")


class DrainingUdpEndpoint(UdpEndpoint):
    """A :class:`UdpEndpoint` that reads on from the socket after the datagrams the loop
    delivers, up to ``DRAIN_DATAGRAMS`` a turn, so one loop turn (and one batch) holds many.

    With asyncio's own loop every datagram otherwise costs a full turn (a select call and
    a batch of one); uvloop's libuv reads up to 32 per poll, and this reads on from there.
    Without ``sock`` it does nothing more than its base.
    """

    #: The endpoint's non-blocking socket (None: deliver only what the loop reads).
    sock: socket.socket | None = None
    #: Datagrams this loop turn may still read on its own (None: a new turn).
    _budget: int | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        super().datagram_received(data, addr)
        if self.sock is None:
            return
        if self._budget is None:
            # Per turn, not per callback: uvloop calls back up to 32 times a poll, and a
            # turn that reads thousands holds up the tasks that store them.
            self._budget = DRAIN_DATAGRAMS
            asyncio.get_running_loop().call_soon(self._next_turn)
        while self._budget > 0:
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error of an earlier reply, as the loop would
                self.error_received(exc)
                return
            self._budget -= 1
            super().datagram_received(data, addr)

    def _next_turn(self) -> None:
        self._budget = None


def _peer(addr: Address) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


async def open_udp(
    dispatcher: Dispatcher, host: str, port: int, rcvbuf: int | None
) -> tuple[asyncio.DatagramTransport, UdpEndpoint]:
    """Bind the UDP endpoint; set SO_RCVBUF when asked and say what the kernel granted.

    The socket is made here, not by the loop, so the endpoint holds the real socket to
    drain (asyncio's transport hands out only a wrapper without ``recvfrom``).
    """
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (
        await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if rcvbuf is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(address)
        sock.setblocking(False)
        endpoint = DrainingUdpEndpoint(dispatcher)
        endpoint.sock = sock
        transport, _ = await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
    except BaseException:
        sock.close()
        raise
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    dispatcher.counters[Stat.UDP_RCVBUF] = granted
    # Linux doubles the request for its bookkeeping and caps it at net.core.rmem_max.
    if rcvbuf is not None and granted < rcvbuf * (2 if sys.platform == "linux" else 1):
        log.warning(
            "udp_rcvbuf_capped",
            requested=rcvbuf,
            granted=granted,
            hint="raise net.core.rmem_max to allow more",
        )
    return transport, endpoint


_KERNEL_STATS = {
    "RcvbufErrors": Stat.KERNEL_UDP_RCVBUFERRORS,
    "InErrors": Stat.KERNEL_UDP_INERRORS,
    "InDatagrams": Stat.KERNEL_UDP_INDATAGRAMS,
}


def kernel_udp_stats() -> dict[str, int]:
    """The kernel counters the stats report, prefixed so their origin is plain."""
    counters = kernel_udp_counters()
    return {stat: counters[name] for name, stat in _KERNEL_STATS.items() if name in counters}


def kernel_udp_counters(snmp: Path = Path("/proc/net/snmp")) -> dict[str, int]:
    """The kernel's UDP counters (``RcvbufErrors``, ``InErrors``, ...), where the OS has them.

    These are host-wide: on a shared machine they include other programs' datagrams, so
    a demo compares them before and after a run rather than reading them raw.
    """
    try:
        lines = snmp.read_text().splitlines()
    except OSError:
        return {}
    rows = [line.split() for line in lines if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    names, values = rows[0][1:], rows[1][1:]
    return {name: int(value) for name, value in zip(names, values, strict=False)}
