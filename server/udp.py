"""The UDP listener: every datagram is exactly one frame; replies go to the sender.

Like aioquic's protocols, ``datagram_received`` never raises: a datagram that is not one
well-formed frame is dropped and counted, and a frame that fails validation gets at most
one ``error`` datagram back. The requests themselves go to the same ``Dispatcher`` as
TCP's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any, cast

import structlog

from forkwire.protocol import (
    Bye,
    Error,
    Message,
    ProtocolError,
    decode_datagram,
    decode_message,
    pack,
)
from forkwire.server.dispatch import SLOW_REQUESTS, Dispatcher

log = structlog.get_logger("forkwire.udp")

#: The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
MAX_DATAGRAM = 65_507

Address = Any  # (host, port) for IPv4, (host, port, flow, scope) for IPv6


class UdpEndpoint(asyncio.DatagramProtocol):
    """Answers datagrams; counts what it drops in the dispatcher's counters."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.counters = dispatcher.counters
        self.transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's, though it acts like one.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.counters["udp_datagrams_received"] += 1
        if not self._accepting:
            self.counters["udp_datagrams_refused_stopping"] += 1
            return
        try:
            payload = decode_datagram(data, max_frame=self.dispatcher.settings.max_frame)
        except ProtocolError:
            # Not one frame: nothing in it can be trusted, not even as a request to answer.
            self.counters["udp_datagrams_malformed"] += 1
            return
        try:
            message = decode_message(payload)
        except ProtocolError as exc:
            self.counters["udp_datagrams_rejected"] += 1
            self._reply(Error(code=exc.code, message=exc.message, ref=exc.ref), addr)
            return
        self._handle(message, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier reply: the sender went away. Count it.
        self.counters["udp_send_errors"] += 1

    def _handle(self, message: Message, addr: Address) -> None:
        if isinstance(message, SLOW_REQUESTS):
            task = asyncio.create_task(self._answer(message, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(message, Bye):
            self._reply(Bye(), addr)  # no conversation to wind down over UDP
        else:
            self._reply(self.dispatcher.answer_now(message), addr)

    async def _answer(self, request: Message, addr: Address) -> None:
        reply = await self.dispatcher.answer(request)
        if reply is not None:
            self._reply(reply, addr, ref=getattr(request, "id", None))

    def _reply(self, message: Message, addr: Address, ref: int | None = None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        frame = pack(message)
        if len(frame) > MAX_DATAGRAM:
            frame = pack(
                Error(
                    code="reply_too_large",
                    message=f"the reply of {len(frame)} bytes does not fit a datagram; "
                    "send smaller jobs over UDP",
                    ref=ref,
                )
            )
        self.transport.sendto(frame, addr)
        self.counters["udp_datagrams_sent"] += 1

    def stop_accepting(self) -> None:
        """Shutdown: drop new datagrams (counted) but keep the socket to answer the old."""
        self._accepting = False

    async def drain(self, grace: float) -> None:
        """Wait, at most ``grace`` seconds, for the requests being answered."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)


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
        dispatcher.counters["udp_rcvbuf"] = granted
    elif sock is not None:
        dispatcher.counters["udp_rcvbuf"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return transport, endpoint


def kernel_udp_stats() -> dict[str, int]:
    """The kernel counters the stats report, prefixed so their origin is plain."""
    counters = kernel_udp_counters()
    return {
        f"kernel_udp_{name.lower()}": counters[name]
        for name in ("RcvbufErrors", "InErrors", "InDatagrams")
        if name in counters
    }


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
