"""The group-commit writer: few commits, exact per-submitter counts, acks only after commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from forkwire.server.ingest import Writer
from forkwire.server.storage import AddResult, Repository, open_repository
from forkwire.server.storage.base import Entry, encode_value
from forkwire.server.storage.memory import MemoryRepository


def reading(sensor: str, seq: int, value: float = 1.0, producer: str = "") -> Entry:
    return Entry(sensor, producer, seq, float(seq), encode_value(value))


class RecordingRepository(MemoryRepository):
    """A memory store that records the size of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        self.batches.append(len(readings))
        return await super().add_many(readings, received_at)


class GatedRepository(RecordingRepository):
    """Holds every commit until the test opens the gate, to pile up submissions meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        self.entered.set()
        await self.gate.wait()
        return await super().add_many(readings, received_at)


class FlakyRepository(RecordingRepository):
    """A store whose first ``failures`` commits raise."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def add_many(self, readings: Sequence[Entry], received_at: float) -> AddResult:
        if self.failures:
            self.failures -= 1
            self.batches.append(len(readings))
            raise OSError("disk on fire")
        return await super().add_many(readings, received_at)


@asynccontextmanager
async def running(writer: Writer) -> AsyncIterator[Writer]:
    await writer.start()
    try:
        yield writer
    finally:
        await writer.close()


async def keys_of(repo: Repository) -> list[tuple[str, int]]:
    return [(row.sensor, row.seq) for row in await repo.query()]


@pytest.fixture(params=["memory", "sqlite"])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Repository]:
    """A real store to commit into: memory, and a SQLite file."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'r.sqlite'}"
    opened = await open_repository(url)
    yield opened
    await opened.close()


async def test_concurrent_submits_share_commits(repo: Repository) -> None:
    """100 concurrent single-reading submits are stored in far fewer than 100 commits."""
    async with running(Writer(repo, flush_interval=0.05)) as writer:
        results = await asyncio.gather(*(writer.submit([reading("s", i)]) for i in range(100)))
    assert all(result == AddResult(stored=1, duplicates=0) for result in results)
    assert 1 <= writer.commits < 100
    assert (writer.received, writer.stored, writer.duplicates) == (100, 100, 0)
    assert await keys_of(repo) == [("s", i) for i in range(100)]


async def test_each_submitter_gets_its_own_counts(repo: Repository) -> None:
    """In one shared commit, each submitter is told its own stored and duplicate counts."""
    await repo.add_many([reading("a", 0)], received_at=0.0)
    # max_batch equals the total, so all three land in one flush at once.
    async with running(Writer(repo, flush_interval=60, max_batch=5)) as writer:
        old_and_new, other, repeated = await asyncio.gather(
            writer.submit([reading("a", 0), reading("a", 1)]),  # a0 stored before
            writer.submit([reading("b", 0)]),
            writer.submit([reading("a", 1), reading("a", 2)]),  # a1 also in the first one
        )
    assert writer.commits == 1
    assert old_and_new == AddResult(
        stored=1, duplicates=1, duplicate_keys=frozenset({("a", "", 0)})
    )
    assert other == AddResult(stored=1, duplicates=0)
    assert repeated == AddResult(stored=1, duplicates=1, duplicate_keys=frozenset({("a", "", 1)}))
    assert (writer.stored, writer.duplicates) == (3, 2)
    assert await keys_of(repo) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]


async def test_duplicates_within_one_submission_count(repo: Repository) -> None:
    """The same reading twice in one submission is stored once and counted once as a
    duplicate; the same key with another value is a conflict."""
    async with running(Writer(repo, flush_interval=0)) as writer:
        result = await writer.submit([reading("a", 0), reading("a", 0), reading("a", 0, value=2.0)])
    assert (result.stored, result.duplicates) == (1, 1)
    assert result.conflict_keys == {("a", "", 0)}
    assert (writer.duplicates, writer.conflicts) == (1, 1)
    assert [row.value for row in await repo.query()] == [1.0]


async def test_duplicates_across_flushes(repo: Repository) -> None:
    """A key committed by an earlier flush is a duplicate in a later one, not stored again."""
    async with running(Writer(repo, flush_interval=0)) as writer:
        first = await writer.submit([reading("a", 0, value=1.0)])
        second = await writer.submit([reading("a", 0, value=1.0), reading("a", 1)])
    assert first == AddResult(stored=1, duplicates=0)
    assert second == AddResult(stored=1, duplicates=1, duplicate_keys=frozenset({("a", "", 0)}))
    assert writer.commits == 2
    assert [(row.seq, row.value) for row in await repo.query()] == [(0, 1.0), (1, 1.0)]


async def test_conflicts_in_one_commit_are_told_to_their_submitter(repo: Repository) -> None:
    """Merged into one commit, the submitter whose reading clashes is told so, the others
    are not, and the sinks hear only of what was stored."""
    await repo.add_many([reading("a", 0, value=1.0)], received_at=0.0)
    copied: list[tuple[str, str, int]] = []
    writer = Writer(
        repo,
        flush_interval=60,
        max_batch=4,
        on_commit=lambda es, _: copied.extend(e.key for e in es),
    )
    async with running(writer):
        clash, fine, late = await asyncio.gather(
            writer.submit([reading("a", 0, value=5.0), reading("a", 1)]),
            writer.submit([reading("b", 0)]),
            writer.submit([reading("a", 1, value=3.0)]),  # clashes with the first's a1
        )
    assert clash.conflict_keys == {("a", "", 0)}
    assert clash.stored == 1
    assert fine == AddResult(stored=1, duplicates=0)
    assert late.conflict_keys == {("a", "", 1)}
    assert sorted(copied) == [("a", "", 1), ("b", "", 0)]


async def test_full_batch_flushes_without_waiting_for_the_interval() -> None:
    """max_batch pending readings are committed at once, not after flush_interval."""
    repo = RecordingRepository()
    async with running(Writer(repo, flush_interval=60, max_batch=3)) as writer:
        async with asyncio.timeout(5):
            await asyncio.gather(
                writer.submit([reading("a", 0), reading("a", 1)]), writer.submit([reading("a", 2)])
            )
    assert repo.batches == [3]


async def test_lone_submission_waits_for_the_flush_interval() -> None:
    """A submission alone is committed once flush_interval has passed, not before."""
    repo = RecordingRepository()
    loop = asyncio.get_running_loop()
    async with running(Writer(repo, flush_interval=0.05)) as writer:
        started = loop.time()
        await writer.submit([reading("a", 0)])
        elapsed = loop.time() - started
    assert elapsed >= 0.05
    assert repo.batches == [1]


async def test_batches_respect_max_batch_and_never_split_a_submission() -> None:
    """Batches stay within max_batch; a larger submission is committed whole and alone."""
    repo = GatedRepository()
    async with running(Writer(repo, flush_interval=0.01, max_batch=5)) as writer:
        first = asyncio.create_task(writer.submit([reading("x", 0)]))
        await repo.entered.wait()  # the first commit is in flight; the rest queue behind it
        sizes = [2, 2, 2, 7, 1]
        rest = [
            asyncio.create_task(writer.submit([reading(f"s{n}", i) for i in range(size)]))
            for n, size in enumerate(sizes)
        ]
        await asyncio.sleep(0)
        assert writer.queue_depth == sum(sizes)
        repo.gate.set()
        results = await asyncio.gather(first, *rest)
    assert repo.batches == [1, 4, 2, 7, 1]
    assert [result.stored for result in results] == [1, *sizes]
    assert writer.queue_depth == 0


async def test_failed_commit_fails_every_waiter_and_writer_continues() -> None:
    """If add_many raises, every submitter in the batch gets the error; later ones succeed."""
    repo = FlakyRepository(failures=1)
    batches = [[reading("a", 0)], [reading("a", 1)], [reading("b", 0)]]
    async with running(Writer(repo, flush_interval=0.05)) as writer:
        outcomes = await asyncio.gather(
            *(writer.submit(batch) for batch in batches), return_exceptions=True
        )
        assert all(isinstance(outcome, OSError) for outcome in outcomes)
        assert await repo.query() == []
        # Nothing of the failed batch counts as stored, so a resend is stored, not a duplicate.
        retried = await asyncio.gather(*(writer.submit(batch) for batch in batches))
    assert retried == [AddResult(stored=1, duplicates=0)] * 3
    assert repo.batches == [3, 3]
    assert (writer.failed_commits, writer.commits, writer.stored) == (1, 1, 3)
    assert await keys_of(repo) == [("a", 0), ("a", 1), ("b", 0)]


async def test_what_arrives_during_a_commit_shares_the_next_one() -> None:
    """Leader-follower: no clock; a lone submission commits at once, and everything that
    arrived while that commit ran goes into the next commit together."""
    repo = GatedRepository()
    async with running(Writer(repo, max_batch=1000)) as writer:
        first = asyncio.create_task(writer.submit([reading("a", 0)]))
        await asyncio.wait_for(repo.entered.wait(), 1.0)  # committing, no wait before it
        others = [asyncio.create_task(writer.submit([reading("b", i)])) for i in range(7)]
        await asyncio.sleep(0)
        repo.gate.set()
        await asyncio.gather(first, *others)
    assert repo.batches == [1, 7]


async def test_a_full_queue_makes_submitters_wait() -> None:
    """Beyond max_pending queued readings, submit() waits for room instead of queueing."""
    repo = GatedRepository()
    async with running(Writer(repo, max_batch=2, max_pending=4)) as writer:
        first = asyncio.create_task(writer.submit([reading("a", 0)]))
        await asyncio.wait_for(repo.entered.wait(), 1.0)
        queued = [asyncio.create_task(writer.submit([reading("b", i)])) for i in range(4)]
        blocked = asyncio.create_task(writer.submit([reading("c", 0)]))
        await asyncio.sleep(0.05)
        assert writer.queue_depth == 4
        assert not blocked.done()
        repo.gate.set()
        await asyncio.gather(first, *queued, blocked)
    assert sum(repo.batches) == 6
    assert max(repo.batches) <= 2


async def test_close_commits_what_is_pending(repo: Repository) -> None:
    """close() commits the pending submissions at once and answers them before it returns."""
    writer = Writer(repo, flush_interval=60)
    await writer.start()
    tasks = [asyncio.create_task(writer.submit([reading("a", i)])) for i in range(3)]
    await asyncio.sleep(0)
    assert writer.queue_depth == 3
    async with asyncio.timeout(5):
        await writer.close()
    assert all(task.done() for task in tasks)
    assert [task.result().stored for task in tasks] == [1, 1, 1]
    assert await keys_of(repo) == [("a", 0), ("a", 1), ("a", 2)]
    assert writer.queue_depth == 0


async def test_close_without_start_still_commits() -> None:
    """Submissions made before start() are not stranded by close()."""
    repo = MemoryRepository()
    writer = Writer(repo, flush_interval=60)
    task = asyncio.create_task(writer.submit([reading("a", 0)]))
    await asyncio.sleep(0)
    await writer.close()
    assert (await task).stored == 1
    assert await keys_of(repo) == [("a", 0)]


async def test_submit_after_close_is_refused() -> None:
    """A closed writer refuses new readings instead of leaving them unanswered."""
    writer = Writer(MemoryRepository())
    await writer.start()
    await writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.submit([reading("a", 0)])


async def test_empty_submission_needs_no_commit() -> None:
    """Submitting nothing answers zero at once, without a commit."""
    repo = RecordingRepository()
    async with running(Writer(repo)) as writer:
        assert await writer.submit([]) == AddResult(stored=0, duplicates=0)
    assert repo.batches == []
    assert writer.commits == 0


async def test_cancelled_submitter_does_not_disturb_the_others() -> None:
    """A submitter that stops waiting leaves the others' commit and answers intact."""
    repo = RecordingRepository()
    async with running(Writer(repo, flush_interval=60, max_batch=3)) as writer:
        leaver = asyncio.create_task(writer.submit([reading("a", 0)]))
        await asyncio.sleep(0)
        leaver.cancel()
        stayers = await asyncio.gather(
            writer.submit([reading("a", 1)]), writer.submit([reading("a", 2)])
        )
    assert leaver.cancelled()
    assert list(stayers) == [AddResult(stored=1, duplicates=0)] * 2
    assert await keys_of(repo) == [("a", 0), ("a", 1), ("a", 2)]


@pytest.mark.parametrize(("interval", "batch"), [(-1.0, 10), (0.05, 0)])
def test_bad_settings_are_refused(interval: float, batch: int) -> None:
    """A negative flush_interval or a max_batch below 1 is a ValueError."""
    with pytest.raises(ValueError, match="must be"):
        Writer(MemoryRepository(), flush_interval=interval, max_batch=batch)
