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
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any, cast

import structlog

from forkwire.protocol import (
    Calc,
    DatagramRequest,
    Dropped,
    Error,
    Rejected,
    Request,
    ServerDatagrams,
    Stat,
)
from forkwire.server.dispatch import Dispatcher

log = structlog.get_logger("forkwire.udp")

Address = Any  # (host, port) for IPv4, (host, port, flow, scope) for IPv6


class UdpEndpoint(asyncio.DatagramProtocol):
    """Answers datagrams; counts what it drops in the dispatcher's counters."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.counters = dispatcher.counters
        settings = dispatcher.settings
        self.rules = ServerDatagrams(
            dispatcher.welcome(), max_frame=settings.max_frame, max_reply=settings.udp_max_reply
        )
        self.max_inflight = settings.udp_max_inflight
        self._job_slots = asyncio.Semaphore(max(1, dispatcher.runner.workers // 2))
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
        if isinstance(event, Dropped):
            self.counters[Stat.UDP_DATAGRAMS_MALFORMED] += 1
        elif isinstance(event, Rejected):
            self.counters[Stat.UDP_DATAGRAMS_REJECTED] += 1
        elif isinstance(event, DatagramRequest):
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


async def open_udp(
    dispatcher: Dispatcher, host: str, port: int, rcvbuf: int | None
) -> tuple[asyncio.DatagramTransport, UdpEndpoint]:
    """Bind the UDP endpoint; set SO_RCVBUF when asked and say what the kernel granted."""
    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(dispatcher), local_addr=(host, port)
    )
    sock = transport.get_extra_info("socket")
    if rcvbuf is not None and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Linux doubles the request for its bookkeeping and caps it at net.core.rmem_max.
        if granted < rcvbuf:
            log.warning(
                "udp_rcvbuf_capped",
                requested=rcvbuf,
                granted=granted,
                hint="raise net.core.rmem_max to allow more",
            )
        dispatcher.counters[Stat.UDP_RCVBUF] = granted
    elif sock is not None:
        dispatcher.counters[Stat.UDP_RCVBUF] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
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
