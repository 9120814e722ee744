"""Fan-out: sinks get what the store newly committed, and never hold up an ack."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from forkwire.server.ingest import Writer
from forkwire.server.sinks import QUEUE_BATCHES, Sinks
from forkwire.server.storage import AddResult
from forkwire.server.storage.base import Entry, encode_value
from forkwire.server.storage.memory import MemoryRepository


def reading(sensor: str, seq: int) -> Entry:
    return Entry(sensor, "", seq, float(seq), encode_value(seq))


class ListSink:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.closed = False

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        self.batches.append([(r.sensor, r.seq) for r in readings])
        return AddResult(stored=len(readings), duplicates=0)

    async def close(self) -> None:
        self.closed = True


class BrokenSink(ListSink):
    """A sink whose every add fails."""

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        raise OSError("mirror is down")


class StuckSink(ListSink):
    """A sink that never finishes an add."""

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_sink_gets_what_the_store_newly_stored_and_nothing_twice() -> None:
    """Duplicates, already in the store or repeated in one commit, are not copied again."""
    sink = ListSink()
    sinks = Sinks([("list://", sink)])
    sinks.start()
    writer = Writer(MemoryRepository(), flush_interval=0, on_commit=sinks.offer)
    await writer.start()
    await writer.submit([reading("a", 0), reading("a", 1)])
    await writer.submit([reading("a", 1), reading("a", 2), reading("a", 2)])
    await writer.close()
    await sinks.close()
    copied = [key for batch in sink.batches for key in batch]
    assert copied == [("a", 0), ("a", 1), ("a", 2)]
    assert sinks.failures == 0
    assert sink.closed


async def test_a_failing_sink_costs_no_ack_and_is_counted() -> None:
    """The store commits and acks while the sink fails; the loss is counted and logged once."""
    sinks = Sinks([("broken://", BrokenSink()), ("list://", healthy := ListSink())])
    with structlog.testing.capture_logs() as logs:
        sinks.start()
        writer = Writer(MemoryRepository(), flush_interval=0, on_commit=sinks.offer)
        await writer.start()
        for seq in range(3):
            result = await writer.submit([reading("a", seq)])
            assert result.stored == 1
        await writer.close()
        await sinks.close()
    assert sinks.failures == 3
    assert len(healthy.batches) == 3
    assert [e["sink"] for e in logs if e["event"] == "sink_failing"] == ["broken://"]


async def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    """A sink that stops taking has a bounded queue; beyond it batches are dropped."""
    sinks = Sinks([("stuck://", StuckSink())])
    sinks.start()
    for seq in range(QUEUE_BATCHES + 10):
        sinks.offer([reading("a", seq)], 1.0)
    await asyncio.sleep(0)
    assert sinks.failures >= 9  # the task holds one batch, the queue the rest
    await sinks.close(patience=0.05)
    assert sinks.failures == QUEUE_BATCHES + 10


async def test_closing_waits_for_what_is_queued() -> None:
    """close() lets each sink take its queue before it stops."""
    sink = ListSink()
    sinks = Sinks([("list://", sink)])
    sinks.start()
    for seq in range(5):
        sinks.offer([reading("a", seq)], 1.0)
    await sinks.close()
    assert len(sink.batches) == 5
    assert sinks.failures == 0
