"""Fan-out: copies of what the store committed, for destinations an ack never waits for.

The first ``--db`` URL is *the store*: acks wait for its commit, duplicates are judged by
it, reports and series read it. Every later URL is a *sink*: it receives each reading the
store newly stored, after that commit, through a bounded queue and a task of its own. A
sink is best effort, like a log shipper: a batch it fails to take, or that finds its queue
full, is dropped, counted in ``sink_failures`` and logged (once per failing streak), and
neither the store nor the acks wait. So one slow or broken mirror never costs a client its
acks, and "acked" always means one thing: committed to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from forkwire.server.storage.base import AddResult, Entry

log = structlog.get_logger("forkwire.sinks")

#: Batches a sink may have waiting before new ones are dropped: at the default group
#: commit of up to 1,000 readings, about a minute of a busy server's ingest.
QUEUE_BATCHES: Final = 1024


class Sink(Protocol):
    """Anything that takes readings: every store does, and ``screen://``."""

    async def add_many(self, entries: Sequence[Entry], received_at: float) -> AddResult: ...

    async def close(self) -> None: ...


@dataclass(eq=False)
class _Feed:
    name: str
    sink: Sink
    queue: asyncio.Queue[tuple[list[Entry], float]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_BATCHES)
    )
    failing: bool = False
    task: asyncio.Task[None] | None = None


class Sinks:
    """The sinks of one server, each fed by its own task.

    Args:
        sinks: ``(name, sink)`` pairs; the name (a redacted URL) is what the log shows.
    """

    def __init__(self, sinks: Sequence[tuple[str, Sink]]) -> None:
        self._feeds = [_Feed(name, sink) for name, sink in sinks]
        #: Readings that a sink dropped (a full queue, or a failed add_many).
        self.failures = 0

    def start(self) -> None:
        """Start one feeding task per sink."""
        for feed in self._feeds:
            feed.task = asyncio.create_task(self._feed(feed), name=f"sink {feed.name}")

    def offer(self, readings: list[Entry], received_at: float) -> None:
        """Queue newly stored readings for every sink; never waits."""
        if not readings:
            return
        for feed in self._feeds:
            try:
                feed.queue.put_nowait((readings, received_at))
            except asyncio.QueueFull:
                self._failed(feed, len(readings), "queue full")

    async def close(self, patience: float = 5.0) -> None:
        """Give every sink up to ``patience`` seconds to take what is queued, then stop."""
        for feed in self._feeds:
            if feed.task is None:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    await feed.queue.join()
            feed.task.cancel()
            await asyncio.gather(feed.task, return_exceptions=True)
            left = sum(len(batch) for batch, _ in _drain(feed.queue))
            if left:
                self._failed(feed, left, "closed before it took them")
            with contextlib.suppress(Exception):
                await feed.sink.close()

    async def _feed(self, feed: _Feed) -> None:
        while True:
            readings, received_at = await feed.queue.get()
            try:
                await feed.sink.add_many(readings, received_at)
            except asyncio.CancelledError:
                self._failed(feed, len(readings), "closed before it took them")
                raise
            except Exception as exc:
                self._failed(feed, len(readings), f"{type(exc).__name__}: {exc}")
            else:
                if feed.failing:
                    feed.failing = False
                    log.info("sink_recovered", sink=feed.name)
            finally:
                feed.queue.task_done()

    def _failed(self, feed: _Feed, count: int, reason: str) -> None:
        self.failures += count
        if not feed.failing:
            feed.failing = True
            log.warning("sink_failing", sink=feed.name, dropped=count, reason=reason)


def _drain(queue: asyncio.Queue[tuple[list[Entry], float]]) -> list[tuple[list[Entry], float]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
