"""What the server does with each request, whatever transport it came on."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from forkwire.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Calc,
    CalcError,
    CalcResult,
    Error,
    Hello,
    Message,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    ReportResult,
    Stats,
    StatsResult,
    Welcome,
)
from forkwire.protocol import Report as ReportRequest
from forkwire.server.config import Settings
from forkwire.server.ingest import Writer
from forkwire.server.jobs import JobRunner
from forkwire.server.report import build_report

log = structlog.get_logger("forkwire.server")

SERVER_NAME = "forkwire/0.1.0"


class Dispatcher:
    """Turns requests into replies; shared by the TCP and UDP listeners."""

    def __init__(
        self, settings: Settings, runner: JobRunner, writers: Sequence[Writer] = ()
    ) -> None:
        self.settings = settings
        self.runner = runner
        #: One group-commit writer per storage URL; the first one's counts are reported.
        self.writers = tuple(writers)
        #: Server-wide counters; listeners add their own keys (connections, frames, ...).
        self.counters: Counter[str] = Counter()
        #: More counters read when stats are asked for (the kernel's UDP drops, ...).
        self.stats_sources: list[Callable[[], dict[str, int]]] = []

    def welcome(self) -> Welcome:
        """The answer to ``hello``: version, frame limit, and the interpreter's limits."""
        limits = self.settings.limits
        return Welcome(
            version=PROTOCOL_VERSION,
            server=SERVER_NAME,
            max_frame=self.settings.max_frame,
            limits={
                "max_length": limits.max_length,
                "max_depth": limits.max_depth,
                "max_digits": limits.max_digits,
                "workers": self.runner.workers,
                "job_timeout": self.runner.job_timeout,
            },
        )

    def answer_now(self, message: Message) -> Message:
        """Answer a request that takes no time: ``hello``, ``stats``, and what is unexpected."""
        if isinstance(message, Hello):
            return self.greet(message)
        if isinstance(message, Stats):
            return self.stats()
        return unexpected(message)

    async def answer(self, message: Message) -> Message | None:
        """Answer a request that takes time: a job, readings, a report. Never raises.

        Returns None for readings sent with ``ack: false``. A storage failure comes back as
        an ``error`` with code ``storage_unavailable``: nothing of that batch is stored.
        """
        try:
            if isinstance(message, Calc):
                return await self.calc(message)
            if isinstance(message, ReadingsMsg):
                ack = await self.ingest(message.items)
                return ack if message.ack else None
            if isinstance(message, ReadingMsg):
                ack = await self.ingest([message])
                return ack if message.ack else None
            if isinstance(message, ReportRequest):
                return await self.report(message)
        except StorageUnavailable as exc:
            return Error(code=exc.code, message=str(exc))
        except Exception:
            log.exception("request_failed", type=message.type)
            return Error(
                code="internal_error",
                message=f"the {message.type} request failed",
                ref=getattr(message, "id", None),
            )
        return self.answer_now(message)

    def greet(self, hello: Hello) -> Welcome | Error:
        """Answer ``hello``: a welcome, or an error for a version this server does not speak."""
        if hello.version != PROTOCOL_VERSION:
            return Error(
                code="unsupported_version",
                message=f"this server speaks version {PROTOCOL_VERSION}, not {hello.version}",
            )
        return self.welcome()

    async def calc(self, request: Calc) -> CalcResult:
        """Run one job in its own child and answer every expression, in order."""
        outcome = await self.runner.run(request.ops)
        self.counters["calc_errors"] += len(outcome.errors)
        log.info(
            "job_done",
            id=request.id,
            pid=outcome.pid,
            size=len(request.ops),
            errors=len(outcome.errors),
            ms=outcome.ms,
        )
        # The child's output is ours and already well-formed: skip re-validating it.
        errors = [
            CalcError.model_construct(index=index, code=code, message=message)
            for index, code, message in outcome.errors
        ]
        return CalcResult.model_construct(
            type="calc_result", id=request.id, results=outcome.results, errors=errors
        )

    async def ingest(self, readings: Sequence[Reading]) -> Ack:
        """Store readings in every repository; the ack names them once all committed.

        Raises:
            StorageUnavailable: a repository failed; nothing of this batch is acked.
        """
        if not self.writers:
            raise StorageUnavailable("this server has no storage configured")
        self.counters["readings_received"] += len(readings)
        try:
            results = await asyncio.gather(*(writer.submit(readings) for writer in self.writers))
        except Exception as exc:
            self.counters["storage_failures"] += 1
            log.error("storage_failed", error=str(exc), readings=len(readings))
            raise StorageUnavailable(f"storage failed: {type(exc).__name__}") from exc
        primary = results[0]
        self.counters["readings_stored"] += primary.stored
        self.counters["readings_duplicate"] += primary.duplicates
        return Ack.model_construct(
            type="ack", acked=ack_runs(readings), duplicates=primary.duplicates
        )

    async def report(self, request: ReportRequest) -> ReportResult:
        """The analytics report of the stored streams, as ``forkwire report`` writes it.

        Raises:
            StorageUnavailable: there is no storage, or reading it failed.
        """
        if not self.writers:
            raise StorageUnavailable("this server has no storage configured")
        try:
            rows = await self.writers[0].repo.query(request.sensors, request.since)
        except Exception as exc:
            raise StorageUnavailable(f"reading the store failed: {type(exc).__name__}") from exc
        # numpy work on a whole store: off the event loop, so ingest and jobs keep going.
        report = await asyncio.to_thread(build_report, rows)
        return ReportResult(report=json.loads(json.dumps(report, allow_nan=False)))

    def stats(self) -> StatsResult:
        """Counters of the running server."""
        jobs = self.runner.counters
        counters: dict[str, Any] = dict(self.counters)
        counters.update(
            jobs_started=jobs.started,
            jobs_finished=jobs.finished,
            jobs_running=jobs.running,
            jobs_timed_out=jobs.timeouts,
            jobs_crashed=jobs.crashes,
            expressions=jobs.expressions,
            children_alive=len(self.runner.children),
            writer_queue_depth=sum(writer.queue_depth for writer in self.writers),
            commits=self.writers[0].commits if self.writers else 0,
            pid=os.getpid(),
        )
        for source in self.stats_sources:
            counters.update(source())
        return StatsResult(counters=counters)


class StorageUnavailable(Exception):
    """A batch could not be committed; the client keeps it and resends."""

    code = "storage_unavailable"


def ack_runs(readings: Sequence[Reading]) -> dict[str, list[tuple[int, int]]]:
    """Compress the keys of a batch into inclusive runs of consecutive seqs per sensor."""
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for reading in readings:
        seqs[reading.sensor].append(reading.seq)
    runs: dict[str, list[tuple[int, int]]] = {}
    for sensor, values in seqs.items():
        values.sort()
        sensor_runs: list[tuple[int, int]] = []
        first = last = values[0]
        for seq in values[1:]:
            if seq > last + 1:
                sensor_runs.append((first, last))
                first = seq
            last = seq
        sensor_runs.append((first, last))
        runs[sensor] = sensor_runs
    return runs


def unexpected(message: Message) -> Error:
    """The answer to a message only a server sends (``welcome``, ``ack``, ...)."""
    return Error(
        code="unexpected_message",
        message=f"a client does not send '{message.type}'",
        ref=getattr(message, "id", None),
    )


#: Requests answered by :meth:`Dispatcher.answer`, off the listener's read path.
SLOW_REQUESTS = (Calc, ReadingsMsg, ReadingMsg, ReportRequest)
