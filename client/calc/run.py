"""The calc client: stream a file of expressions through the server, in input order.

The file is read lazily in batches (one batch is one job), a window of jobs is kept in
flight, and answers, which may come back in any order, are written strictly in input
order. Memory is bounded by ``window * batch`` lines whatever the size of the file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from forkwire.client.backoff import Backoff
from forkwire.client.calc.batches import Batch, format_answers, read_batches
from forkwire.client.connection import DEFAULT_HOST, Connection
from forkwire.client.errors import ClientError, ConnectionLost
from forkwire.client.transport import Transport
from forkwire.client.udp import DEFAULT_DATAGRAM, UdpConnection
from forkwire.protocol import (
    DEFAULT_PORT,
    HEADER_SIZE,
    Bye,
    Calc,
    CalcError,
    CalcResult,
    Error,
    ErrorCode,
)

#: Lines per job. Every job costs a child process (about 7 ms on a 2-core machine); at
#: 1,000 lines that overhead makes the real 300,003-line workload take as long end to end
#: as CPython's eval alone, at 2,000 the whole run is 1.3-1.4x faster (bench.calc).
DEFAULT_BATCH = 2000

#: Bytes a calc frame spends outside the expressions themselves (type, id, brackets).
_FRAME_OVERHEAD = 64

#: A job the server refused as ``busy`` is sent again after this pause, doubled (with
#: jitter) while the server stays busy, reset by the next answer.
_BUSY_BACKOFF_INITIAL = 0.05
_BUSY_BACKOFF_MAX = 2.0


class CalcFailed(ClientError):
    """The run could not complete; the results file holds the lines before the failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"calc failed: {reason}")


@dataclass(frozen=True, slots=True)
class CalcOptions:
    """Where and how :func:`calc_file` sends its jobs (see :func:`run_calc`)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    batch: int = DEFAULT_BATCH
    window: int = 8
    transport: Transport = Transport.tcp
    #: UDP only: the largest datagram.
    datagram: int = DEFAULT_DATAGRAM


@dataclass(slots=True)
class CalcSummary:
    """What a run did, for the summary line."""

    lines: int = 0
    errors: int = 0
    jobs: int = 0
    seconds: float = 0.0
    #: Jobs sent again: over UDP after a silence, over TCP after a ``busy``; and (UDP
    #: only) jobs given up after every try.
    retries: int = 0
    given_up: int = 0

    @property
    def rate(self) -> float:
        """Lines per second over the whole run."""
        return self.lines / self.seconds if self.seconds > 0 else 0.0


class _Window:
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
        self._empty = asyncio.Event()
        self._empty.set()

    async def drained(self) -> None:
        """Wait until no job is in flight."""
        await self._empty.wait()

    async def admit(self, job_id: int, job: Batch) -> None:
        """Wait for room in the window, then count the job as in flight."""
        await self.slots.acquire()
        self.inflight[job_id] = job
        self._empty.clear()
        self.summary.jobs += 1
        self.summary.errors += len(job.local)
        if len(job.local) == len(job.texts):  # every line was answered locally
            self.settle(job_id, [job.local[i] for i in range(len(job.texts))])

    def answer(self, job_id: int, results: Sequence[object], errors: Sequence[CalcError]) -> None:
        """Settle a job with the server's answer."""
        lines = {e.index: _error_line(e.code, e.message) for e in errors}
        self.summary.errors += len(lines)
        self.settle(job_id, format_answers(self.inflight[job_id], results, lines))

    def fail(self, job_id: int, code: str, message: str) -> None:
        """Settle a job whose every line gets the same error."""
        job = self.inflight[job_id]
        line = _error_line(code, message)
        self.summary.errors += len(job.texts) - len(job.local)
        self.settle(job_id, [job.local.get(i, line) for i in range(len(job.texts))])

    def settle(self, job_id: int, answer_lines: list[str]) -> None:
        """Record a job's lines and write every job that is now next in input order."""
        self._answered[job_id] = (answer_lines, self.inflight.pop(job_id).chars)
        self.slots.release()
        if not self.inflight:
            self._empty.set()
        while self._next_to_write in self._answered:
            chunk, chars = self._answered.pop(self._next_to_write)
            self.out.write("\n".join(chunk))
            self.out.write("\n")
            self.summary.lines += len(chunk)
            if self.on_written is not None:
                self.on_written(len(chunk), chars)
            self._next_to_write += 1


def _error_line(code: str, message: str) -> str:
    return f"error: {code}: {message}".replace("\n", " ")


async def calc_file(
    path: Path,
    out: TextIO,
    options: CalcOptions,
    *,
    on_written: Callable[[int, int], None] | None = None,
) -> CalcSummary:
    """Connect as ``options`` say and evaluate every line of ``path`` (:func:`run_calc`, or
    :func:`run_calc_udp` over UDP); undecodable bytes become U+FFFD, not a failure.

    Raises:
        ConnectError: the server cannot be reached.
        CalcFailed: the run could not complete.
    """
    with path.open(encoding="utf-8", errors="replace") as lines:
        if options.transport is Transport.udp:
            udp = await UdpConnection.open(options.host, options.port)
            try:
                await udp.hello()
                return await run_calc_udp(
                    lines,
                    out,
                    udp,
                    datagram=options.datagram,
                    batch=options.batch,
                    window=options.window,
                    on_written=on_written,
                )
            finally:
                udp.close()
        connection = await Connection.open(options.host, options.port, client="forkwire-calc")
        async with connection:
            return await run_calc(
                lines,
                out,
                connection,
                batch=options.batch,
                window=options.window,
                on_written=on_written,
            )


async def run_calc(
    lines: Iterable[str],
    out: TextIO,
    connection: Connection,
    *,
    batch: int = DEFAULT_BATCH,
    window: int = 8,
    on_written: Callable[[int, int], None] | None = None,
) -> CalcSummary:
    """Send every line as part of a job over TCP and write one answer line per input line.

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
    jobs = _Window(out, window, summary, on_written)
    budget = connection.welcome.max_frame - _FRAME_OVERHEAD
    loop = asyncio.get_running_loop()
    backoff = Backoff(_BUSY_BACKOFF_INITIAL, _BUSY_BACKOFF_MAX)
    retries: set[asyncio.TimerHandle] = set()

    def resend(job_id: int) -> None:
        if job_id in jobs.inflight:
            calc = Calc.model_construct(type="calc", id=job_id, ops=jobs.inflight[job_id].ops())
            connection.send_nowait(calc)

    async def receive() -> None:
        while True:
            try:
                message = await connection.recv()
            except ConnectionLost as exc:
                raise CalcFailed(f"{exc} with {len(jobs.inflight)} jobs unanswered") from None
            if isinstance(message, CalcResult) and message.id in jobs.inflight:
                backoff.reset()
                jobs.answer(message.id, message.results, message.errors)
            elif isinstance(message, Error) and message.ref in jobs.inflight:
                assert isinstance(message.ref, int)
                if message.code == ErrorCode.BUSY:
                    # Too many jobs queued at the server: this one again, after a pause
                    # that grows while the server stays busy.
                    summary.retries += 1
                    retries.add(loop.call_later(backoff.next_delay(), resend, message.ref))
                    continue
                jobs.fail(message.ref, message.code, message.message)
            elif isinstance(message, Bye):
                return
            elif isinstance(message, Error):
                raise CalcFailed(f"server error {message.code}: {message.message}")

    async def send() -> None:
        for job_id, job in enumerate(read_batches(lines, batch=batch, budget=budget)):
            await jobs.admit(job_id, job)
            if job_id in jobs.inflight:
                connection.send_nowait(Calc.model_construct(type="calc", id=job_id, ops=job.ops()))
                await connection.drain()
        await jobs.drained()  # a job refused as busy is sent again: bye only after it
        await connection.send(Bye())

    try:
        await _both(receive(), send())
    except (ConnectionError, OSError) as exc:
        raise CalcFailed(f"connection failed: {exc}") from None
    finally:
        for timer in retries:
            timer.cancel()
    summary.seconds = time.perf_counter() - started
    return summary


async def run_calc_udp(
    lines: Iterable[str],
    out: TextIO,
    udp: UdpConnection,
    *,
    datagram: int = DEFAULT_DATAGRAM,
    batch: int = DEFAULT_BATCH,
    window: int = 8,
    wait: float = 2.0,
    tries: int = 4,
    on_written: Callable[[int, int], None] | None = None,
) -> CalcSummary:
    """Like :func:`run_calc`, over UDP: each job fits one datagram and is retried on silence.

    A job is idempotent (its id names it), so a request or an answer lost on the way is
    simply asked again after ``wait`` seconds, doubling each time; after ``tries`` sends
    its lines become ``error: lost: ...`` and the summary counts it as given up.
    """
    if batch < 1 or window < 1 or tries < 1 or wait <= 0:
        raise ValueError("batch, window and tries must be at least 1 and wait positive")
    summary = CalcSummary()
    started = time.perf_counter()
    jobs = _Window(out, window, summary, on_written)
    loop = asyncio.get_running_loop()
    timers: dict[int, asyncio.TimerHandle] = {}
    sent: dict[int, int] = {}
    all_sent = asyncio.Event()
    finished = asyncio.Event()

    def check_done() -> None:
        if all_sent.is_set() and not jobs.inflight:
            finished.set()

    def transmit(job_id: int) -> None:
        if job_id not in jobs.inflight:
            return
        if sent.get(job_id, 0) >= tries:
            summary.given_up += 1
            jobs.fail(job_id, "lost", f"no answer over UDP after {tries} tries")
            check_done()
            return
        if job_id in sent:
            summary.retries += 1
        sent[job_id] = sent.get(job_id, 0) + 1
        udp.send(Calc.model_construct(type="calc", id=job_id, ops=jobs.inflight[job_id].ops()))
        delay = wait * 2 ** (sent[job_id] - 1)
        timers[job_id] = loop.call_later(delay, transmit, job_id)

    async def receive() -> None:
        while True:
            message = await udp.recv()
            job_id = getattr(message, "id", getattr(message, "ref", None))
            if not isinstance(job_id, int) or job_id not in jobs.inflight:
                continue  # a late duplicate of an answer already written
            timers.pop(job_id).cancel()
            if isinstance(message, CalcResult):
                jobs.answer(job_id, message.results, message.errors)
            elif isinstance(message, Error):
                jobs.fail(job_id, message.code, message.message)
            check_done()

    async def send() -> None:
        budget = datagram - HEADER_SIZE - _FRAME_OVERHEAD
        for job_id, job in enumerate(read_batches(lines, batch=batch, budget=budget)):
            await jobs.admit(job_id, job)
            transmit(job_id)
        all_sent.set()
        check_done()

    receiver = asyncio.create_task(receive())
    try:
        # Done when every job is answered or given up; the receiver is then cancelled.
        await _both(_until(finished), send())
    finally:
        for timer in timers.values():
            timer.cancel()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    summary.seconds = time.perf_counter() - started
    return summary


async def _until(event: asyncio.Event) -> None:
    await event.wait()


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
