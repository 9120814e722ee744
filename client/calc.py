"""The calc client: stream a file of expressions through the server, in input order.

The file is read lazily in batches (one batch is one job), a window of jobs is kept in
flight, and answers, which may come back in any order, are written strictly in input
order. Memory is bounded by ``window * batch`` lines whatever the size of the file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from client.connection import Connection, ConnectionLost
from protocol import Bye, Calc, CalcResult, Error

#: Bytes a calc frame spends outside the expressions themselves (type, id, brackets).
_FRAME_OVERHEAD = 64


class CalcFailed(Exception):
    """The run could not complete; the results file holds the lines before the failure."""


@dataclass(slots=True)
class CalcSummary:
    """What a run did, for the summary line."""

    lines: int = 0
    errors: int = 0
    jobs: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Lines per second over the whole run."""
        return self.lines / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Batch:
    """One job's lines; ``local`` holds lines answered without the server."""

    texts: list[str] = field(default_factory=list)
    chars: int = 0
    local: dict[int, str] = field(default_factory=dict)

    def ops(self) -> list[str]:
        if not self.local:
            return self.texts
        return [text for i, text in enumerate(self.texts) if i not in self.local]


def _payload_size(text: str) -> int:
    # Exact JSON size only where escaping can grow the text; plain ASCII costs its length.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 3
    return len(json.dumps(text)) + 1


def read_batches(lines: Iterable[str], *, batch: int, budget: int) -> Iterator[_Batch]:
    """Group lines into jobs of at most ``batch`` lines and ``budget`` payload bytes.

    A line that could not fit in any frame becomes a local ``too_long`` error line.
    """
    current = _Batch()
    size = 0
    for raw in lines:
        text = raw.rstrip("\n")
        need = _payload_size(text)
        if current.texts and (len(current.texts) >= batch or size + need > budget):
            yield current
            current = _Batch()
            size = 0
        if need > budget:
            current.local[len(current.texts)] = (
                f"error: too_long: line of {need} bytes does not fit in a "
                f"{budget + _FRAME_OVERHEAD}-byte frame"
            )
        else:
            size += need
        current.texts.append(text)
        current.chars += len(raw)
    if current.texts:
        yield current


def format_answers(batch: _Batch, results: Sequence[object], errors: dict[int, str]) -> list[str]:
    """One output line per input line of the batch: ``repr`` of the value or the error."""
    answers = iter(zip(results, range(len(results)), strict=True))
    lines: list[str] = []
    for index in range(len(batch.texts)):
        local = batch.local.get(index)
        if local is not None:
            lines.append(local)
            continue
        value, op_index = next(answers)
        lines.append(repr(value) if value is not None else errors[op_index])
    return lines


async def run_calc(
    lines: Iterable[str],
    out: TextIO,
    connection: Connection,
    *,
    batch: int = 1000,
    window: int = 8,
    on_written: Callable[[int, int], None] | None = None,
) -> CalcSummary:
    """Send every line as part of a job and write one answer line per input line.

    Args:
        lines: the input, read lazily.
        out: where answer lines go, in input order.
        connection: a greeted connection; it is told ``bye`` at the end.
        batch: lines per job.
        window: jobs in flight at once.
        on_written: called with (lines, characters) each time answers are written.

    Raises:
        CalcFailed: the server went away or refused a job as a whole.
    """
    if batch < 1 or window < 1:
        raise ValueError("batch and window must be at least 1")
    summary = CalcSummary()
    started = time.perf_counter()
    budget = connection.welcome.max_frame - _FRAME_OVERHEAD
    inflight: dict[int, _Batch] = {}
    answered: dict[int, tuple[list[str], int]] = {}
    slots = asyncio.Semaphore(window)
    next_to_write = 0

    def settle(job_id: int, answer_lines: list[str]) -> None:
        nonlocal next_to_write
        answered[job_id] = (answer_lines, inflight.pop(job_id).chars)
        slots.release()
        while next_to_write in answered:
            chunk, chars = answered.pop(next_to_write)
            out.write("\n".join(chunk))
            out.write("\n")
            summary.lines += len(chunk)
            if on_written is not None:
                on_written(len(chunk), chars)
            next_to_write += 1

    async def receive() -> None:
        while True:
            try:
                message = await connection.recv()
            except ConnectionLost as exc:
                raise CalcFailed(f"{exc} with {len(inflight)} jobs unanswered") from None
            if isinstance(message, CalcResult) and message.id in inflight:
                errors = {
                    e.index: f"error: {e.code}: {e.message}".replace("\n", " ")
                    for e in message.errors
                }
                summary.errors += len(errors)
                settle(message.id, format_answers(inflight[message.id], message.results, errors))
            elif isinstance(message, Error) and message.ref in inflight:
                job = inflight[message.ref]
                line = f"error: {message.code}: {message.message}".replace("\n", " ")
                summary.errors += len(job.texts)
                settle(message.ref, [job.local.get(i, line) for i in range(len(job.texts))])
            elif isinstance(message, Bye):
                return
            elif isinstance(message, Error):
                raise CalcFailed(f"server error {message.code}: {message.message}")

    async def send() -> None:
        for job_id, job in enumerate(read_batches(lines, batch=batch, budget=budget)):
            await slots.acquire()
            inflight[job_id] = job
            summary.jobs += 1
            summary.errors += len(job.local)
            ops = job.ops()
            if ops:
                connection.send_nowait(Calc.model_construct(type="calc", id=job_id, ops=ops))
                await connection.drain()
            else:  # every line was answered locally
                settle(job_id, [job.local[i] for i in range(len(job.texts))])
        await connection.send(Bye())

    try:
        await _both(receive(), send())
    except (ConnectionError, OSError) as exc:
        raise CalcFailed(f"connection failed: {exc}") from None
    summary.seconds = time.perf_counter() - started
    return summary


async def _both(receiver: Coroutine[None, None, None], sender: Coroutine[None, None, None]) -> None:
    """Run both halves; the first failure cancels the other and is raised as is."""
    tasks = [asyncio.create_task(receiver), asyncio.create_task(sender)]
    try:
        for finished in asyncio.as_completed(tasks):
            await finished
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
