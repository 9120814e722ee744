"""The calc client over TCP: jobs spread over one or more connections, answers in order.

Each connection is a lane with its own reader. A job goes to the lane with the fewest
jobs in flight, so behind a TCP balancer the jobs of one run reach several servers. A job
is idempotent (its id names it), so when a lane's connection is lost its unanswered jobs
are sent again on the other lanes, and one new connection is tried in its place; a job
the server answers ``busy`` is sent again after a pause that doubles. The run fails when
no connection is left, or a job's connection was lost every time it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from forkwire.client.backoff import Backoff
from forkwire.client.calc.batches import read_batches
from forkwire.client.calc.window import CalcFailed, CalcSummary, Window
from forkwire.client.connection import Connection
from forkwire.client.errors import ClientError, ConnectionLost
from forkwire.client.logs import get_logger
from forkwire.protocol import Bye, Calc, CalcResult, Error, ErrorCode

log = get_logger("forkwire.calc")

#: Bytes a calc frame spends outside the expressions themselves (type, id, brackets).
FRAME_OVERHEAD: Final = 64
#: Times one job is sent on connections that are then lost before the run fails.
MAX_TRIES: Final = 6
#: A job the server refused as ``busy`` is sent again after a pause, doubled (with
#: jitter) up to the maximum while the server stays busy, reset by the next answer.
BUSY_BACKOFF: Final = (0.05, 2.0)

#: The most connections chosen from a server's welcome (an explicit --connections may ask
#: for more).
MAX_AUTO_CONNECTIONS: Final = 8

Connect = Callable[[], Awaitable[Connection]]


@dataclass(eq=False)
class _Lane:
    connection: Connection
    jobs: set[int] = field(default_factory=set)
    reader: asyncio.Task[None] | None = None


def connections_for(limits: Mapping[str, object]) -> int:
    """Connections a run needs to keep every worker of the server busy.

    A server runs at most ``connection_workers`` jobs of one connection at once (so that
    one client cannot hold every worker); ``workers / connection_workers`` connections
    reach them all. Older servers do not say: one connection.
    """
    workers, per_connection = limits.get("workers"), limits.get("connection_workers")
    if not isinstance(workers, int) or not isinstance(per_connection, int) or per_connection < 1:
        return 1
    return max(1, min(MAX_AUTO_CONNECTIONS, -(-workers // per_connection)))


async def run_calc(
    lines: Iterable[str],
    out: TextIO,
    connect: Connect,
    *,
    connections: int | None = 1,
    batch: int,
    window: int,
    on_written: Callable[[int, int], None] | None = None,
) -> CalcSummary:
    """Send every line as part of a job and write one answer line per input line.

    Args:
        lines: the input, read lazily.
        out: where answer lines go, in input order.
        connect: opens one greeted connection (each is told ``bye`` at the end).
        connections: connections to spread the jobs over; None: as many as the server's
            welcome says keep its workers busy (:func:`connections_for`).
        batch: lines per job.
        window: jobs in flight at once, over all connections.
        on_written: called with (lines, characters) each time answers are written.

    Raises:
        ConnectError: the first connection cannot be opened.
        CalcFailed: every connection was lost, or the server refused the run.
    """
    if batch < 1 or window < 1 or (connections is not None and connections < 1):
        raise ValueError("batch, window and connections must be at least 1")
    run = _Run(out, connect, window, on_written)
    return await run.run(lines, connections, batch)


class _Run:
    def __init__(
        self,
        out: TextIO,
        connect: Connect,
        window: int,
        on_written: Callable[[int, int], None] | None,
    ) -> None:
        self.connect = connect
        self.summary = CalcSummary()
        self.jobs = Window(out, window, self.summary, on_written)
        self.lanes: list[_Lane] = []
        self.tries: dict[int, int] = {}
        self.failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._timers: set[asyncio.TimerHandle] = set()
        self._replacing = 0
        self._orphans: set[int] = set()  # jobs of lost lanes, not yet sent again
        self._last_loss = ""
        self.busy = Backoff(*BUSY_BACKOFF)

    async def run(self, lines: Iterable[str], connections: int | None, batch: int) -> CalcSummary:
        started = time.perf_counter()
        first = await self.connect()  # its failure is the command's
        self._add(first)
        if connections is None:
            connections = connections_for(first.welcome.limits)
        extra = await asyncio.gather(
            *(self.connect() for _ in range(connections - 1)), return_exceptions=True
        )
        for connection in extra:
            if isinstance(connection, Connection):
                self._add(connection)
            else:
                log.warning("connection not opened", reason=str(connection))
        budget = min(lane.connection.welcome.max_frame for lane in self.lanes) - FRAME_OVERHEAD
        try:
            sender = asyncio.create_task(self._send_all(lines, batch, budget))
            await _first(sender, self.failure)
            await _first(asyncio.create_task(self.jobs.empty.wait()), self.failure)
            await self._goodbye()
        finally:
            for timer in self._timers:
                timer.cancel()
            for lane in self.lanes:
                if lane.reader is not None:
                    lane.reader.cancel()
                await lane.connection.close()
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _add(self, connection: Connection) -> None:
        lane = _Lane(connection)
        lane.reader = asyncio.create_task(self._read(lane))
        self.lanes.append(lane)

    async def _send_all(self, lines: Iterable[str], batch: int, budget: int) -> None:
        for job_id, job in enumerate(read_batches(lines, batch=batch, budget=budget)):
            await self.jobs.admit(job_id, job)
            if job_id in self.jobs.inflight:
                await self._send(job_id)

    async def _send(self, job_id: int, busy: bool = False) -> None:
        """Send a job on the least busy lane (again, after a ``busy`` or a lost lane).

        Raises:
            CalcFailed: the job was sent MAX_TRIES times and its connection was lost each
                time (``busy`` answers do not count: the server is there, and says when).
        """
        if job_id not in self.jobs.inflight:
            return
        if busy:
            self.summary.retries += 1
        else:
            tries = self.tries[job_id] = self.tries.get(job_id, 0) + 1
            if tries > MAX_TRIES:
                raise CalcFailed(
                    f"job {job_id} was sent {MAX_TRIES} times and its connection was lost "
                    f"each time ({self._last_loss})"
                )
            if tries > 1:
                self.summary.retries += 1
        lane = min(self.lanes, key=lambda lane: len(lane.jobs))
        lane.jobs.add(job_id)
        job = self.jobs.inflight[job_id]
        try:
            lane.connection.send_nowait(Calc.model_construct(type="calc", id=job_id, ops=job.ops()))
            await lane.connection.drain()
        except (ConnectionError, OSError):
            pass  # the lane's reader sees the loss and sends its jobs again

    def _send_later(self, job_id: int, delay: float) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self._spawn(self._send(job_id, busy=True))

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        task.add_done_callback(self._check)

    def _check(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self.failure.done():
            self.failure.set_exception(task.exception())  # type: ignore[arg-type]

    async def _read(self, lane: _Lane) -> None:
        jobs = self.jobs
        try:
            while True:
                message = await lane.connection.recv()
                if isinstance(message, CalcResult):
                    self.busy.reset()
                    lane.jobs.discard(message.id)
                    if message.id in jobs.inflight:
                        jobs.answer(message.id, message.results, message.errors)
                elif isinstance(message, Error) and isinstance(message.ref, int):
                    lane.jobs.discard(message.ref)
                    if message.ref not in jobs.inflight:
                        continue
                    if message.code == ErrorCode.BUSY:
                        self._send_later(message.ref, self.busy.next_delay())
                    else:
                        jobs.fail(message.ref, message.code, message.message)
                elif isinstance(message, Bye):
                    return
                elif isinstance(message, Error):
                    self._lost(lane, f"server error {message.code}: {message.message}")
                    return
        except (ConnectionLost, ConnectionError, OSError) as exc:
            self._lost(lane, str(exc))

    def _lost(self, lane: _Lane, reason: str) -> None:
        """A lane's connection is gone: its jobs go to the others, and one new connection
        is tried in its place."""
        self.lanes.remove(lane)
        self._last_loss = reason
        orphans = [job for job in lane.jobs if job in self.jobs.inflight]
        self._orphans.update(orphans)
        log.warning("connection lost", reason=reason, jobs_to_resend=len(orphans))
        self._spawn(self._replace(reason))

    async def _replace(self, reason: str) -> None:
        self._replacing += 1
        try:
            with contextlib.suppress(ClientError):
                self._add(await self.connect())
        finally:
            self._replacing -= 1
        if not self.lanes:
            if self._replacing:
                return  # another replacement may still bring a lane and resend these
            raise CalcFailed(f"{reason} with {len(self.jobs.inflight)} jobs unanswered")
        orphans, self._orphans = sorted(self._orphans), set()
        for job_id in orphans:
            await self._send(job_id)

    async def _goodbye(self) -> None:
        for lane in self.lanes:
            with contextlib.suppress(ConnectionError, OSError, ConnectionLost):
                await lane.connection.send(Bye())
        readers = [lane.reader for lane in self.lanes if lane.reader is not None]
        if readers:
            await asyncio.wait(readers, timeout=30.0)


async def _first(work: asyncio.Future[Any], failure: asyncio.Future[None]) -> None:
    """Wait for ``work``; a failure of the run raises first, and cancels ``work``."""
    waiting: set[asyncio.Future[Any]] = {work, failure}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if failure in done:
        work.cancel()
        failure.result()
    work.result()
