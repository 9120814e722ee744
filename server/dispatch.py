"""What the server does with each request, whatever transport it came on.

The conversation rules (hello, bye, bad frames, which side may send what) are the
protocol's (``forkwire.protocol.connection``); this module only does the work a request
asks for and says what the answer is.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from pydantic import PrivateAttr

import forkwire
from forkwire.protocol import (
    MAX_REPORT_SENSORS,
    PROTOCOL_VERSION,
    Ack,
    Calc,
    CalcError,
    CalcResult,
    Error,
    ErrorCode,
    Ping,
    Pong,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Reply,
    Report,
    ReportResult,
    Request,
    Series,
    Stat,
    Stats,
    StatsResult,
    Welcome,
)
from forkwire.server.config import Settings
from forkwire.server.ingest import Writer
from forkwire.server.jobs import JobRunner
from forkwire.server.logs import RateLimitedLog
from forkwire.server.metrics import Histograms
from forkwire.server.report import build_report, build_report_of_streams, build_series
from forkwire.server.sinks import Sinks
from forkwire.server.storage import Entry, Key
from forkwire.server.storage.base import ColumnStore, encode_value

log = structlog.get_logger("forkwire.server")

#: During a storage outage, one ``storage_failed`` line per this many seconds at most.
STORAGE_LOG_EVERY = 10.0
#: The ``retry_after`` of ``storage_unavailable``: the outage's age so far, within these
#: bounds (seconds), so clients back off further the longer it lasts.
MIN_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 30.0


class Dispatcher:
    """Turns requests into replies; shared by the TCP and UDP listeners.

    Args:
        writer: the group-commit writer of the store; acks wait for its commits.
        sinks: where newly stored readings are copied after the commit (best effort).
    """

    def __init__(
        self,
        settings: Settings,
        runner: JobRunner,
        writer: Writer | None = None,
        sinks: Sinks | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.writer = writer
        self.sinks = sinks
        #: Server-wide counters (``Stat`` names); listeners add theirs.
        self.counters: Counter[str] = Counter()
        #: More counters read when stats are asked for (the kernel's UDP drops, ...).
        self.stats_sources: list[Callable[[], dict[str, int]]] = []
        #: Frames by type and errors by code (see ``ServerConnection.tally``).
        self.tally: Counter[tuple[str, str]] = Counter()
        #: Job duration and group commit distributions, for the metrics endpoint.
        self.histograms = Histograms()
        # A storage outage: when it began (monotonic), and its rate-limited log.
        self._outage_since: float | None = None
        self._storage_log = RateLimitedLog(log, every=STORAGE_LOG_EVERY)

    def welcome(self) -> Welcome:
        """The answer to ``hello``: version, frame limit, and the interpreter's limits."""
        limits = self.settings.limits
        return Welcome(
            version=PROTOCOL_VERSION,
            server=f"forkwire/{forkwire.__version__}",
            max_frame=self.settings.max_frame,
            limits={
                "max_length": limits.max_length,
                "max_depth": limits.max_depth,
                "max_digits": limits.max_digits,
                "workers": self.runner.workers,
                "job_timeout": self.runner.job_timeout,
                "max_reply": self.runner.max_reply,
                "udp_max_inflight": self.settings.udp_max_inflight,
                "udp_max_reply": self.settings.udp_max_reply,
                "max_unsent": self.settings.max_unsent,
                "max_pipeline": self.settings.max_pipeline,
                "max_connections": self.settings.max_connections,
                "hello_timeout": self.settings.hello_timeout,
                "idle_timeout": self.settings.idle_timeout,
                "frame_timeout": self.settings.frame_timeout,
                "max_queued_jobs": self.settings.max_queued_jobs,
                "connection_workers": self.settings.jobs_per_connection,
            },
        )

    async def answer(self, request: Request) -> Reply | None:
        """The reply to a request; None for readings sent with ``ack: false``. Never raises.

        A storage failure comes back as ``storage_unavailable``: nothing of that request
        is stored, and the protocol closes the connection after it.
        """
        try:
            if isinstance(request, Calc):
                return await self.calc(request)
            if isinstance(request, ReadingsMsg):
                ack = await self.ingest(request.items, request.producer)
                return ack if request.ack else None
            if isinstance(request, ReadingMsg):
                ack = await self.ingest([request], request.producer)
                return ack if request.ack else None
            if isinstance(request, Stats):
                return self.stats()
            if isinstance(request, Report):
                return await self.report(request)
            if isinstance(request, Series):
                return await self.series(request)
            if isinstance(request, Ping):  # over TCP the conversation answers it
                return Pong(id=request.id)
        except StorageUnavailable as exc:
            return Error(
                code=ErrorCode.STORAGE_UNAVAILABLE, message=str(exc), retry_after=exc.retry_after
            )
        except Conflict as exc:
            return Error(code=ErrorCode.CONFLICT, message=str(exc), keys=exc.keys)
        except RequestRefused as exc:
            return Error(code=ErrorCode.BAD_MESSAGE, message=str(exc))
        except Exception:
            log.exception("request_failed", type=request.type)
            return Error(
                code=ErrorCode.INTERNAL_ERROR,
                message=f"the {request.type} request failed",
                ref=getattr(request, "id", None),
            )
        return None  # hello and bye: the protocol answers them

    async def calc(self, request: Calc) -> CalcResult | Error:
        """Run one job in its own child and answer every expression, in order.

        The child sends the reply's arrays as JSON, within ``max_reply``; they are spliced
        into the frame unparsed (see :class:`EncodedCalcResult`). A job whose errors alone
        would pass ``max_reply`` is answered ``reply_too_large`` as a whole.
        """
        outcome = await self.runner.run(request.ops)
        self.counters[Stat.CALC_ERRORS] += outcome.error_count
        self.histograms.job_seconds.observe(outcome.ms / 1000)
        log.info(
            "job_done",
            id=request.id,
            pid=outcome.pid,
            size=len(request.ops),
            errors=outcome.error_count,
            ms=outcome.ms,
        )
        if outcome.oversize:
            return Error(
                code=ErrorCode.REPLY_TOO_LARGE,
                message=f"the answer would take {outcome.oversize} bytes in errors alone, "
                f"over max_reply ({self.runner.max_reply}); send smaller jobs",
                ref=request.id,
            )
        answer = outcome.answer
        payload = b"".join(
            (
                b'{"type":"calc_result","id":',
                str(request.id).encode(),
                b',"results":',
                answer.results,
                b',"errors":',
                answer.errors,
                b"}",
            )
        )
        if len(request.ops) <= SMALL_JOB:
            results, errors = outcome.results, outcome.errors
        else:
            results, errors = [], []  # not decoded: the payload is the reply
        reply = EncodedCalcResult.model_construct(
            type="calc_result",
            id=request.id,
            results=results,
            errors=[
                CalcError.model_construct(index=index, code=code, message=message)
                for index, code, message in errors
            ],
        )
        reply._payload = payload
        return reply

    async def ingest(self, readings: Sequence[Reading], producer: str | None = None) -> Ack:
        """Store readings; the ack names them once the store committed them.

        Raises:
            StorageUnavailable: the store failed; nothing of this batch is acked.
            Conflict: some keys are stored with another ts or value: nothing is acked (the
                others of the batch may be stored: a resend of them is acked as duplicates).
        """
        writer = self._writer()
        self.counters[Stat.READINGS_RECEIVED] += len(readings)
        owner = producer or ""
        entries = [
            Entry(r.sensor, owner, r.seq, float(r.ts), encode_value(r.value)) for r in readings
        ]
        try:
            result = await writer.submit(entries)
        except Exception as exc:
            raise self._storage_failed("storage failed", exc, readings=len(readings)) from exc
        self._storage_ok()
        self.counters[Stat.READINGS_STORED] += result.stored
        self.counters[Stat.READINGS_DUPLICATE] += result.duplicates
        if result.conflict_keys:
            self.counters[Stat.READINGS_CONFLICT] += len(result.conflict_keys)
            raise Conflict(sorted(result.conflict_keys))
        return Ack.model_construct(
            type="ack", acked=ack_runs(readings), duplicates=result.duplicates
        )

    async def report(self, request: Report) -> ReportResult:
        """The analytics of the stored streams.

        Raises:
            StorageUnavailable: there is no store, or reading it failed.
        """
        repo = self._writer().repo
        if isinstance(repo, ColumnStore):
            # Columns, not an object per reading: a few times faster over a large store,
            # and far less for the garbage collector to pause everything for.
            try:
                columns, omitted = await repo.stream_columns(
                    request.sensors, request.since, max_sensors=MAX_REPORT_SENSORS
                )
            except Exception as exc:
                raise self._storage_failed("reading the store failed", exc) from exc
            self._storage_ok()
            report = await asyncio.to_thread(
                build_report_of_streams,
                columns,
                fill=request.fill,
                max_gap=request.max_gap,
                sensors_omitted=omitted,
            )
            return ReportResult.model_construct(type="report_result", report=report)
        rows = await self._query(request.sensors, request.since)
        # numpy work on a whole store: off the event loop, so ingest and jobs keep going.
        report = await asyncio.to_thread(
            build_report, rows, fill=request.fill, max_gap=request.max_gap
        )
        return ReportResult.model_construct(type="report_result", report=report)

    async def series(self, request: Series) -> Reply:
        """One page of a sensor's points, gaps filled.

        Raises:
            StorageUnavailable: there is no store, or reading it failed.
            RequestRefused: the page would hold too many filled points.
        """
        producer = request.producer or ""
        rows = await self._query(
            [request.sensor],
            request.since,
            producer=producer,
            from_seq=request.after,
            limit=request.limit + 2,  # the left neighbour, a page, and one to see more
        )
        try:
            return await asyncio.to_thread(
                build_series,
                request.sensor,
                producer,
                rows,
                after=request.after,
                limit=request.limit,
                fill=request.fill,
                max_gap=request.max_gap,
            )
        except ValueError as exc:
            raise RequestRefused(str(exc)) from None

    def stats(self) -> StatsResult:
        """Counters of the running server."""
        jobs = self.runner.counters
        counters: dict[str, Any] = dict(self.counters)
        counters.update(
            {
                Stat.JOBS_STARTED: jobs.started,
                Stat.JOBS_FINISHED: jobs.finished,
                Stat.JOBS_RUNNING: jobs.running,
                Stat.JOBS_TIMED_OUT: jobs.timeouts,
                Stat.JOBS_CRASHED: jobs.crashes,
                Stat.EXPRESSIONS: jobs.expressions,
                Stat.CHILDREN_ALIVE: len(self.runner.children),
                Stat.WRITER_QUEUE_DEPTH: self.writer.queue_depth if self.writer else 0,
                Stat.COMMITS: self.writer.commits if self.writer else 0,
                Stat.PID: os.getpid(),
            }
        )
        if self.sinks is not None:
            counters[Stat.SINK_FAILURES] = self.sinks.failures
        for source in self.stats_sources:
            counters.update(source())
        return StatsResult(counters={str(name): value for name, value in counters.items()})

    def _writer(self) -> Writer:
        if self.writer is None:
            raise StorageUnavailable("this server has no storage configured")
        return self.writer

    async def _query(self, sensors: Sequence[str] | None, since: float | None, **page: Any) -> Any:
        repo = self._writer().repo
        try:
            rows = await repo.query(sensors, since, **page)
        except Exception as exc:
            raise self._storage_failed("reading the store failed", exc) from exc
        self._storage_ok()
        return rows

    def _storage_failed(self, what: str, exc: Exception, **fields: Any) -> StorageUnavailable:
        """Count and log a storage failure (once, then every ``STORAGE_LOG_EVERY`` seconds
        with the count since: every batch of every client fails during an outage), and the
        error for the client, advising a wait that grows with the outage."""
        self.counters[Stat.STORAGE_FAILURES] += 1
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
        outage = now - self._outage_since
        # TimeoutError's text is empty; its name is the news.
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._storage_log.error("storage_failed", error=reason, outage_s=round(outage, 3), **fields)
        retry_after = round(min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, outage)), 1)
        return StorageUnavailable(f"{what}: {type(exc).__name__}", retry_after=retry_after)

    @property
    def in_outage(self) -> bool:
        """Whether the last storage call failed (and none succeeded since)."""
        return self._outage_since is not None

    def _storage_ok(self) -> None:
        if self._outage_since is None:
            return
        outage = time.monotonic() - self._outage_since
        self._outage_since = None
        unlogged = self._storage_log.forget("storage_failed")
        log.warning("storage_recovered", outage_s=round(outage, 3), failures_not_logged=unlogged)


#: Jobs up to this many expressions also get their reply's fields decoded (cheap), for
#: whoever reads the reply object rather than its encoding.
SMALL_JOB = 1024


class EncodedCalcResult(CalcResult):
    """A ``calc_result`` whose JSON the job's child wrote: encoding it is a copy.

    A large job's ``results`` and ``errors`` fields are left empty: the payload is the
    reply, and building a quarter of a million objects to re-encode them is what stalled
    the event loop.
    """

    _payload: bytes = PrivateAttr(default=b"")

    def model_dump_json(self, **_: Any) -> str:
        return self._payload.decode()


class StorageUnavailable(Exception):
    """A batch could not be committed, or the store read; the client keeps it and resends,
    after ``retry_after`` seconds if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(Exception):
    """Readings whose key is stored with another ts or value: refused, never acked."""

    def __init__(self, keys: Sequence[Key]) -> None:
        self.keys = key_runs(keys)
        shown = ", ".join(
            f"{sensor} seq {first}" + (f"-{last}" if last != first else "")
            for sensor, runs in self.keys.items()
            for first, last in runs[:3]
        )
        producer = keys[0][1] if keys else ""
        whose = f" of producer {producer}" if producer else ""
        super().__init__(
            f"{len(keys)} readings{whose} are stored already with another ts or value "
            f"({shown}); they are not stored again and not acked"
        )


class RequestRefused(Exception):
    """A well-formed request that cannot be answered as asked (the message says why)."""


def ack_runs(readings: Sequence[Reading]) -> dict[str, list[tuple[int, int]]]:
    """Compress the keys of a batch into inclusive runs of consecutive seqs per sensor."""
    return _runs((reading.sensor, reading.seq) for reading in readings)


def key_runs(keys: Sequence[Key]) -> dict[str, list[tuple[int, int]]]:
    """The same for stored keys (one request has one producer)."""
    return _runs((sensor, seq) for sensor, _, seq in keys)


def _runs(pairs: Iterable[tuple[str, int]]) -> dict[str, list[tuple[int, int]]]:
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for sensor, seq in pairs:
        seqs[sensor].append(seq)
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
