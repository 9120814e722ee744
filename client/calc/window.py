"""What every calc runner shares: the jobs in flight and the in-order writing of their
answers, the run's summary, and the one error a run fails with."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TextIO

from forkwire.client.calc.batches import Batch, format_answers
from forkwire.client.errors import ClientError
from forkwire.protocol import CalcError


class CalcFailed(ClientError):
    """The run could not complete; the results file holds the lines before the failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"calc failed: {reason}")


@dataclass(slots=True)
class CalcSummary:
    """What a run did, for the summary line."""

    lines: int = 0
    errors: int = 0
    jobs: int = 0
    seconds: float = 0.0
    #: Jobs sent again: after a silence (UDP), a lost connection or a ``busy`` (TCP).
    retries: int = 0
    #: Jobs given up after every try.
    given_up: int = 0

    @property
    def rate(self) -> float:
        """Lines per second over the whole run."""
        return self.lines / self.seconds if self.seconds > 0 else 0.0


class Window:
    """Jobs in flight and the in-order writing of their answers, whatever the transport."""

    def __init__(
        self,
        out: TextIO,
        window: int,
        summary: CalcSummary,
        on_written: Callable[[int, int], None] | None,
    ) -> None:
        self.out = out
        self.summary = summary
        self.on_written = on_written
        self.inflight: dict[int, Batch] = {}
        self.slots = asyncio.Semaphore(window)
        self._answered: dict[int, tuple[list[str], int]] = {}
        self._next_to_write = 0
        #: Set while no job is in flight.
        self.empty = asyncio.Event()
        self.empty.set()

    async def admit(self, job_id: int, job: Batch) -> None:
        """Wait for room in the window, then count the job as in flight."""
        await self.slots.acquire()
        self.inflight[job_id] = job
        self.empty.clear()
        self.summary.jobs += 1
        self.summary.errors += len(job.local)
        if len(job.local) == len(job.texts):  # every line was answered locally
            self.settle(job_id, [job.local[i] for i in range(len(job.texts))])

    def answer(self, job_id: int, results: Sequence[object], errors: Sequence[CalcError]) -> None:
        """Settle a job with the server's answer."""
        lines = {e.index: error_line(e.code, e.message) for e in errors}
        self.summary.errors += len(lines)
        self.settle(job_id, format_answers(self.inflight[job_id], results, lines))

    def fail(self, job_id: int, code: str, message: str) -> None:
        """Settle a job whose every line gets the same error."""
        job = self.inflight[job_id]
        line = error_line(code, message)
        self.summary.errors += len(job.texts) - len(job.local)
        self.settle(job_id, [job.local.get(i, line) for i in range(len(job.texts))])

    def settle(self, job_id: int, answer_lines: list[str]) -> None:
        """Record a job's lines and write every job that is now next in input order."""
        self._answered[job_id] = (answer_lines, self.inflight.pop(job_id).chars)
        self.slots.release()
        if not self.inflight:
            self.empty.set()
        while self._next_to_write in self._answered:
            chunk, chars = self._answered.pop(self._next_to_write)
            self.out.write("\n".join(chunk))
            self.out.write("\n")
            self.summary.lines += len(chunk)
            if self.on_written is not None:
                self.on_written(len(chunk), chars)
            self._next_to_write += 1


def error_line(code: str, message: str) -> str:
    """The results file's line for an expression the server did not evaluate."""
    return f"error: {code}: {message}".replace("\n", " ")


async def until(event: asyncio.Event) -> None:
    """Wait for ``event`` (a coroutine, for :func:`both`)."""
    await event.wait()


async def both(receiver: Coroutine[None, None, None], sender: Coroutine[None, None, None]) -> None:
    """Run both halves; the first failure cancels the other and is raised as is."""
    tasks = [asyncio.create_task(receiver), asyncio.create_task(sender)]
    try:
        for finished in asyncio.as_completed(tasks):
            await finished
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
