"""Group commit, leader-follower: one writer task turns many small submissions into few
transactions without making anyone wait for a clock.

Every connection submits the readings it received and waits. The writer commits as soon as
there is work and it is idle; whatever arrives while a commit runs goes into the next one,
all of it (up to ``max_batch`` readings), so the batch grows exactly as fast as the store
is slow and an idle server acks a lone reading after one commit. Each submission is
answered with its own counts, only after its commit, so an ack never promises a reading
that a crash could lose; if the commit fails, every submission in it gets the error and
nothing is acked (the clients resend; the key makes that safe).

The queue is bounded (``max_pending`` readings): a submitter waits for room, so when the
store is slower than the clients the connections stop reading and TCP pushes back on the
clients, instead of the server's memory growing.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forkwire.server.storage.base import AddResult, Entry, Key, Repository, result_of


@dataclass(slots=True)
class _Submission:
    entries: Sequence[Entry]
    future: asyncio.Future[AddResult]
    arrived: float  # loop time


class Writer:
    """The group-commit writer of one repository.

    Args:
        repo: where the batches go.
        flush_interval: how long a submission arriving at an idle writer may wait for others
            to share its commit, in seconds. 0 (the default) commits at once: under load the
            batches fill by themselves while the previous commit runs.
        max_batch: the most readings in one commit, and a flush at once when reached. A
            submission is never split, so one larger than this is committed alone.
        max_pending: readings queued before :meth:`submit` waits for room (backpressure);
            by default ten batches.
        on_commit: called after each commit with the readings it newly stored (not the
            duplicates) and its ``received_at``; the fan-out to sinks hangs here.
    """

    def __init__(
        self,
        repo: Repository,
        *,
        flush_interval: float = 0.0,
        max_batch: int = 1000,
        max_pending: int | None = None,
        on_commit: Callable[[list[Entry], float], None] | None = None,
        on_timing: Callable[[int, float], None] | None = None,
    ) -> None:
        if flush_interval < 0:
            raise ValueError(f"flush_interval must be >= 0, got {flush_interval}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.repo = repo
        self.on_commit = on_commit
        #: Told each successful commit's size in readings and its seconds (metrics).
        self.on_timing = on_timing
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_pending = max_pending if max_pending is not None else 10 * max_batch
        if self.max_pending < max_batch:
            raise ValueError(f"max_pending must be >= max_batch, got {self.max_pending}")
        #: Readings submitted, stored, found duplicate and found conflicting (against the
        #: store, or within one flush); commits that succeeded and that failed.
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.conflicts = 0
        self.commits = 0
        self.failed_commits = 0
        self._pending: deque[_Submission] = deque()
        self._pending_readings = 0
        self._inflight: list[_Submission] = []
        # Set when the first submission arrives in an empty queue (start the clock) and when
        # a flush is due at once (full batch, close); the writer waits on it, never polls.
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()  # set when a batch leaves the queue
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Readings waiting for a commit that has not started yet."""
        return self._pending_readings

    async def start(self) -> None:
        """Start the writer task."""
        if self._task is not None:
            raise RuntimeError("writer already started")
        if self._closing:
            raise RuntimeError("writer is closed")
        self._task = asyncio.create_task(self._run(), name="forkwire-writer")

    async def submit(self, entries: Sequence[Entry]) -> AddResult:
        """Queue readings and wait until the commit that holds them; the result names the
        ones that were duplicates or conflicts.

        A cancelled caller stops waiting, but readings already queued may still be stored:
        that is harmless, since a resend is then acked as a duplicate.

        Raises:
            RuntimeError: the writer is closed.
            Exception: whatever ``add_many`` raised for the batch holding these readings.
        """
        if self._closing:
            raise RuntimeError("writer is closed")
        if not entries:
            return AddResult(stored=0, duplicates=0)
        # A full queue makes the submitter wait: its connection stops reading meanwhile.
        # A submission larger than the bound goes in alone, once the queue is empty.
        while self._pending and self._pending_readings + len(entries) > self.max_pending:
            self._room.clear()
            await self._room.wait()
            if self._closing:
                raise RuntimeError("writer is closed")
        loop = asyncio.get_running_loop()
        submission = _Submission(entries, loop.create_future(), loop.time())
        if not self._pending:
            self._wakeup.set()
        self._pending.append(submission)
        self._pending_readings += len(entries)
        self.received += len(entries)
        if self._pending_readings >= self.max_batch:
            self._wakeup.set()
        return await submission.future

    async def close(self) -> None:
        """Commit everything pending, then stop the writer task."""
        self._closing = True
        self._wakeup.set()
        self._room.set()
        if self._task is None:
            # Never started: drain here, so no submitter is left waiting forever.
            self._task = asyncio.create_task(self._run(), name="forkwire-writer")
        await self._task

    async def _run(self) -> None:
        try:
            while self._pending or not self._closing:
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._wait_until_due()
                await self._flush(self._take_batch())
        finally:
            # Only reached early if the task is cancelled or has a bug: fail the waiters
            # rather than leave them hanging.
            self._fail_all(RuntimeError("writer stopped before committing"))

    async def _wait_until_due(self) -> None:
        deadline = self._pending[0].arrived + self.flush_interval
        loop = asyncio.get_running_loop()
        while not self._closing and self._pending_readings < self.max_batch:
            if loop.time() >= deadline:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Submission]:
        batch = [self._pending.popleft()]
        size = len(batch[0].entries)
        while self._pending and size + len(self._pending[0].entries) <= self.max_batch:
            submission = self._pending.popleft()
            batch.append(submission)
            size += len(submission.entries)
        self._pending_readings -= size
        self._room.set()
        return batch

    async def _flush(self, batch: list[_Submission]) -> None:
        # Judge repeats across the merged submissions first, as the store would: the store
        # sees each key once, and a later copy is its submitter's duplicate or conflict.
        seen: dict[Key, tuple[float, str]] = {}
        unique: list[Entry] = []
        verdicts: list[tuple[list[Key], list[Key], list[Key]]] = []  # mine, again, clashing
        for submission in batch:
            mine: list[Key] = []
            again: list[Key] = []
            clashing: list[Key] = []
            for entry in submission.entries:
                key = entry.key
                payload = seen.get(key)
                if payload is None:
                    seen[key] = (entry.ts, entry.value)
                    unique.append(entry)
                    mine.append(key)
                elif payload == (entry.ts, entry.value):
                    again.append(key)
                else:
                    clashing.append(key)
            verdicts.append((mine, again, clashing))
        self._inflight = batch
        received_at = time.time()
        began = time.perf_counter()
        try:
            result = await self.repo.add_many(unique, received_at)
        except Exception as exc:
            self.failed_commits += 1
            self._inflight = []
            for submission in batch:
                if not submission.future.done():
                    submission.future.set_exception(exc)
            return
        self._inflight = []
        self.commits += 1
        self.stored += result.stored
        if self.on_timing is not None:
            self.on_timing(len(unique), time.perf_counter() - began)
        refused = result.duplicate_keys | result.conflict_keys
        if self.on_commit is not None and result.stored:
            self.on_commit(
                [e for e in unique if e.key not in refused] if refused else unique, received_at
            )
        for submission, (mine, again, clashing) in zip(batch, verdicts, strict=True):
            duplicates = [*again, *(key for key in mine if key in result.duplicate_keys)]
            conflicts = [*clashing, *(key for key in mine if key in result.conflict_keys)]
            self.duplicates += len(duplicates)
            self.conflicts += len(conflicts)
            if not submission.future.done():
                submission.future.set_result(
                    result_of(
                        len(submission.entries) - len(duplicates) - len(conflicts),
                        duplicates,
                        conflicts,
                    )
                )

    def _fail_all(self, exc: Exception) -> None:
        waiting = [*self._inflight, *self._pending]
        self._inflight = []
        self._pending.clear()
        self._pending_readings = 0
        for submission in waiting:
            if not submission.future.done():
                submission.future.set_exception(exc)
