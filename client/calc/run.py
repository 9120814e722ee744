"""The calc client: stream a file of expressions through the server, in input order.

The file is read lazily in batches (one batch is one job), a window of jobs is kept in
flight, and answers, which may come back in any order, are written strictly in input
order (:mod:`~forkwire.client.calc.window`). Memory is bounded by ``window * batch``
lines whatever the size of the file. Over TCP the jobs go over one or more connections
(:mod:`~forkwire.client.calc.tcp`); over UDP (here) each job is one datagram.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, TextIO

from forkwire.client.calc.batches import read_batches
from forkwire.client.calc.tcp import FRAME_OVERHEAD, run_calc
from forkwire.client.calc.window import CalcFailed, CalcSummary, Window, both, until
from forkwire.client.connection import DEFAULT_HOST, PLAIN, Connection, Credentials
from forkwire.client.transport import Transport
from forkwire.client.udp import DEFAULT_DATAGRAM, UdpConnection
from forkwire.protocol import DEFAULT_PORT, HEADER_SIZE, Calc, CalcResult, Error

__all__ = ["DEFAULT_BATCH", "CalcFailed", "CalcOptions", "CalcSummary", "calc_file", "run_calc"]

#: Lines per job, at most (a job also stops short of the server's max_frame). Every job
#: costs a child process and a frame each way, about 4 ms of CPU in all; bigger jobs
#: spread that over more lines, smaller ones fill the pipeline sooner. Measured end to end
#: on the real 300,003-line workload (``python -m bench.calc --batch N``, 2 CPUs, best of
#: 3): 10,000 lines per job 0.70 s, 20,000 0.62 s, 30,000 (cut to about 23,000 by the
#: frame) 0.61 s. A 20,000-line job of the real file is about 900 KB.
DEFAULT_BATCH = 20_000


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
    #: TCP only: connections the jobs are spread over (None: what the server's welcome
    #: says keeps its workers busy).
    connections: int | None = None
    #: The token and TLS the server asks for.
    credentials: Credentials = PLAIN


async def calc_file(
    lines: Iterable[str],
    out: TextIO,
    options: CalcOptions,
    *,
    on_written: Callable[[int, int], None] | None = None,
) -> CalcSummary:
    """Connect as ``options`` say and evaluate every line of ``lines`` (:func:`run_calc`,
    or :func:`run_calc_udp` over UDP).

    Raises:
        ConnectError: the server cannot be reached.
        CalcFailed: the run could not complete.
    """
    if options.transport is Transport.udp:
        udp = await UdpConnection.open(options.host, options.port, token=options.credentials.token)
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

    def connect() -> Awaitable[Connection]:
        return Connection.open(
            options.host, options.port, client="forkwire-calc", credentials=options.credentials
        )

    return await run_calc(
        lines,
        out,
        connect,
        connections=options.connections,
        batch=options.batch,
        window=options.window,
        on_written=on_written,
    )


#: Bytes a sealed datagram adds around its request, beyond the escaping of the request.
SEAL_OVERHEAD: Final = 200


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
    jobs = Window(out, window, summary, on_written)
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
        budget = datagram - HEADER_SIZE - FRAME_OVERHEAD
        if udp.sealed:
            # The job travels as a JSON string in the seal (each quote escaped, at most
            # doubling it) beside the seal's fields.
            budget = (budget - SEAL_OVERHEAD) // 2
        for job_id, job in enumerate(read_batches(lines, batch=batch, budget=budget)):
            await jobs.admit(job_id, job)
            transmit(job_id)
        all_sent.set()
        check_done()

    receiver = asyncio.create_task(receive())
    try:
        # Done when every job is answered or given up; the receiver is then cancelled.
        await both(until(finished), send())
    finally:
        for timer in timers.values():
            timer.cancel()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
    summary.seconds = time.perf_counter() - started
    return summary
