"""The paced senders: acked ``readings`` frames over TCP, fire-and-forget datagrams over UDP.

Both issue seqs ``0..count-1`` of one sensor at the offered rate (or unpaced), run each
seq through the noise stage first, and report the seqs it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from forkwire.client.connection import PLAIN, Connection, Credentials, describe_error
from forkwire.client.demo.config import DemoError
from forkwire.client.sensors.noise import Chain
from forkwire.client.udp import UdpConnection
from forkwire.protocol import Ack, Error, Reading, ReadingMsg, ReadingsMsg

_T = TypeVar("_T")

#: The pacer wakes at most this often and sends every reading that has become due; a
#: sleep per reading would cost more than the sending at 100,000/s.
_TICK: Final = 0.002
#: A UDP burst yields to the event loop after this many datagrams.
_UDP_YIELD_EVERY: Final = 256
_ACK_TIMEOUT: Final = 60.0


@dataclass
class _Sent:
    """What a sender did: seqs issued, seqs the noise dropped, and for how long."""

    issued: int
    noise_seqs: list[int]
    seconds: float
    #: TCP: from the first send to the last ack.
    acked_seconds: float | None = None


async def _pace(
    per_second: float | None, count: int, emit: Callable[[int, int], Awaitable[None]]
) -> float:
    """Call ``emit(first_seq, n)`` with every seq as it falls due; return the seconds taken.

    Without a rate everything is due at once, and ``emit`` itself yields as it goes.
    """
    start = time.perf_counter()
    next_seq = 0
    while next_seq < count:
        if per_second is None:
            due = count
        else:
            due = min(count, int((time.perf_counter() - start) * per_second) + 1)
        if due > next_seq:
            await emit(next_seq, due - next_seq)
            next_seq = due
        if next_seq < count and per_second is not None:
            wait = next_seq / per_second - (time.perf_counter() - start)
            await asyncio.sleep(max(wait, _TICK))
    return time.perf_counter() - start


async def _send_udp(
    udp: UdpConnection, sensor: str, per_second: float | None, count: int, chain: Chain | None
) -> _Sent:
    dropped: list[int] = []

    async def emit(first: int, n: int) -> None:
        for index, seq in enumerate(range(first, first + n)):
            if chain is not None and not chain(seq):
                dropped.append(seq)
                continue
            udp.send(ReadingMsg(sensor=sensor, seq=seq, ts=time.time(), value=seq, ack=False))
            if index % _UDP_YIELD_EVERY == _UDP_YIELD_EVERY - 1:
                await asyncio.sleep(0)

    seconds = await _pace(per_second, count, emit)
    return _Sent(count, dropped, seconds)


class _TcpSender:
    """Acked ``readings`` frames with at most ``window`` of them unanswered."""

    def __init__(self, connection: Connection, sensor: str, window: int) -> None:
        self.connection = connection
        self.sensor = sensor
        self.frames = 0
        self.replies = 0
        self.acked = 0
        self._window = asyncio.Semaphore(window)
        self.caught_up = asyncio.Event()
        self.caught_up.set()

    async def send(self, seqs: range, chain: Chain | None, dropped: list[int]) -> None:
        """Send the seqs the noise keeps as one frame, once the window has room."""
        # Take the slot before the noise and the ts: both belong to the moment of sending,
        # and the time spent waiting for the window is the sender's, not the network's.
        await self._window.acquire()
        kept: list[int] = []
        for seq in seqs:
            if chain is None or chain(seq):
                kept.append(seq)
            else:
                dropped.append(seq)
        if not kept:
            self._window.release()
            return
        items = [Reading(sensor=self.sensor, seq=seq, ts=time.time(), value=seq) for seq in kept]
        self.frames += 1
        self.caught_up.clear()
        await self.connection.send(ReadingsMsg(items=items, ack=True))

    async def read_replies(self) -> None:
        """Release a window slot per ack; never returns (cancel it)."""
        while True:
            reply = await self.connection.recv()
            if isinstance(reply, Error):
                raise DemoError(f"the server refused readings: {describe_error(reply)}")
            if not isinstance(reply, Ack):
                continue
            self.acked += sum(last - first + 1 for first, last in reply.acked.get(self.sensor, []))
            self.replies += 1
            self._window.release()
            if self.replies == self.frames:
                self.caught_up.set()


async def _send_tcp(
    host: str,
    port: int,
    sensor: str,
    per_second: float | None,
    count: int,
    chain: Chain | None,
    batch: int,
    window: int,
    credentials: Credentials = PLAIN,
) -> _Sent:
    connection = await Connection.open(host, port, client="forkwire-demo", credentials=credentials)
    async with connection:
        sender = _TcpSender(connection, sensor, window)
        dropped: list[int] = []

        async def emit(first: int, n: int) -> None:
            for start in range(first, first + n, batch):
                await sender.send(range(start, min(start + batch, first + n)), chain, dropped)

        reader = asyncio.create_task(sender.read_replies())
        started = time.perf_counter()
        try:
            seconds = await _watched(_pace(per_second, count, emit), reader, None)
            await _watched(sender.caught_up.wait(), reader, _ACK_TIMEOUT)
            acked_seconds = time.perf_counter() - started
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await connection.goodbye(wait=5.0)
    on_wire = count - len(dropped)
    if sender.acked != on_wire:
        raise DemoError(f"{sensor}: {on_wire} readings sent over TCP but {sender.acked} acked")
    return _Sent(count, dropped, seconds, acked_seconds)


async def _watched(work: Awaitable[_T], watchdog: asyncio.Task[None], limit: float | None) -> _T:
    """Await ``work`` unless ``watchdog`` fails first (its error is raised) or time runs out."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait(
            {task, watchdog}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        if watchdog in done:
            watchdog.result()
            raise DemoError("the TCP connection stopped answering")
        raise DemoError(f"no ack for {limit:.0f} s")
    finally:
        task.cancel()
