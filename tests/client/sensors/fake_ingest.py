"""A fake ingest server for the fleet tests: real sockets, the real codec, a dict as storage.

It speaks just enough of protocol v2 (``hello``, ``reading``/``readings`` with a producer,
``bye``) to test the client without depending on the real server. It commits a frame by
putting its readings in :attr:`FakeIngest.stored` after ``ack_delay`` (and after
``ack_gate`` is set), then acks it (or, if one of its keys is stored with another ts or
value, refuses it with ``conflict``), and records how many frames and readings were ever
outstanding (received, not answered).
Stopping it closes every connection and forgets every unacked reading, like a crash
between receipt and commit; :attr:`stored` survives a stop/start, like a database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable

from forkwire.protocol import (
    DEFAULT_MAX_FRAME,
    Ack,
    Bye,
    Error,
    FrameDecoder,
    Hello,
    ProtocolError,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Welcome,
    decode_request,
    pack,
)


def ack_runs(keys: Iterable[tuple[str, int]]) -> dict[str, list[tuple[int, int]]]:
    """Group ``(sensor, seq)`` keys into inclusive runs of consecutive seqs per sensor."""
    by_sensor: defaultdict[str, list[int]] = defaultdict(list)
    for sensor, seq in keys:
        by_sensor[sensor].append(seq)
    runs: dict[str, list[tuple[int, int]]] = {}
    for sensor, seqs in by_sensor.items():
        seqs.sort()
        out: list[tuple[int, int]] = []
        for seq in seqs:
            if out and seq <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], seq))
            else:
                out.append((seq, seq))
        runs[sensor] = out
    return runs


class FakeIngest:
    """An ingest server on 127.0.0.1; ``port`` is chosen on the first start and kept."""

    def __init__(self, *, ack_delay: float = 0.0) -> None:
        self.ack_delay = ack_delay
        #: Clear it to hold every ack until it is set again.
        self.ack_gate = asyncio.Event()
        self.ack_gate.set()
        #: Answer this many ``readings`` frames with an ``error`` (a failed commit).
        self.refuse_frames = 0
        self.port = 0
        #: Keyed by (sensor, seq) and kept per producer: producers[key] says whose it is.
        self.stored: dict[tuple[str, int], Reading] = {}
        self.producers: dict[tuple[str, int], str] = {}
        self.received = 0
        self.duplicates = 0
        self.conflicts = 0
        self.outstanding = 0
        self.max_outstanding = 0
        self.frames_outstanding = 0
        self.max_frames_outstanding = 0
        self.max_items = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._acks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Listen (on a fresh port the first time, on the same port afterwards)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def serving(self) -> bool:
        """Whether it is listening."""
        return self._server is not None

    async def stop(self) -> None:
        """Stop listening, drop every connection and every unacked frame."""
        assert self._server is not None
        self._server.close()
        for task in list(self._acks):
            task.cancel()
        await asyncio.gather(*self._acks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    def seqs(self, sensor: str) -> list[int]:
        """The stored seqs of one sensor, sorted."""
        return sorted(seq for name, seq in self.stored if name == sensor)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking after every change of state."""
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        self._touch()
        decoder = FrameDecoder(max_frame=DEFAULT_MAX_FRAME)
        mine: set[asyncio.Task[None]] = set()
        try:
            while data := await reader.read(64 * 1024):
                for payload in decoder.feed(data):
                    await self._answer(decode_request(payload), writer, mine)
        except (ConnectionError, ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            self._touch()

    async def _answer(
        self, message: object, writer: asyncio.StreamWriter, mine: set[asyncio.Task[None]]
    ) -> None:
        if isinstance(message, Hello):
            writer.write(pack(Welcome(server="fake-ingest", max_frame=DEFAULT_MAX_FRAME)))
        elif isinstance(message, ReadingsMsg | ReadingMsg):
            items: list[Reading] = (
                list(message.items) if isinstance(message, ReadingsMsg) else [message]
            )
            if self.refuse_frames > 0:
                self.refuse_frames -= 1
                writer.write(pack(Error(code="storage_failed", message="commit failed")))
                self._touch()
                await writer.drain()
                return
            self.received += len(items)
            self.outstanding += len(items)
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            self.frames_outstanding += 1
            self.max_frames_outstanding = max(self.max_frames_outstanding, self.frames_outstanding)
            self.max_items = max(self.max_items, len(items))
            task = asyncio.create_task(self._commit(items, message.producer or "", writer))
            for tasks in (mine, self._acks):
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            self._touch()
        elif isinstance(message, Bye):
            # Bye is answered after everything the connection sent before it.
            await asyncio.gather(*mine, return_exceptions=True)
            writer.write(pack(Bye()))
        await writer.drain()

    async def _commit(
        self, items: list[Reading], producer: str, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self.ack_gate.wait()
            if self.ack_delay:
                # Simulated commit latency, not synchronisation.
                await asyncio.sleep(self.ack_delay)
        finally:
            self.outstanding -= len(items)
            self.frames_outstanding -= 1
            self._touch()
        duplicates = 0
        clashing = []
        for item in items:
            key = (item.sensor, item.seq)
            if key not in self.stored:
                self.stored[key] = item
                self.producers[key] = producer
            elif (self.stored[key].ts, self.stored[key].value) == (item.ts, item.value):
                duplicates += 1
            else:
                clashing.append(key)
        self.conflicts += len(clashing)
        with contextlib.suppress(ConnectionError):
            if clashing:
                error = Error(code="conflict", message="stored with another value")
                writer.write(pack(error.model_copy(update={"keys": ack_runs(clashing)})))
            else:
                acked = ack_runs((r.sensor, r.seq) for r in items)
                writer.write(pack(Ack(acked=acked, duplicates=duplicates)))
        self._touch()
