"""What the server does with each request, whatever transport it came on."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import structlog

from protocol import (
    PROTOCOL_VERSION,
    Calc,
    CalcError,
    CalcResult,
    StatsResult,
    Welcome,
)
from server.config import Settings
from server.jobs import JobRunner

log = structlog.get_logger("forkwire.server")

SERVER_NAME = "forkwire/0.1.0"


class Dispatcher:
    """Turns requests into replies; shared by the TCP and UDP listeners."""

    def __init__(self, settings: Settings, runner: JobRunner) -> None:
        self.settings = settings
        self.runner = runner
        #: Server-wide counters; listeners add their own keys (connections, frames, ...).
        self.counters: Counter[str] = Counter()

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
            pid=os.getpid(),
        )
        return StatsResult(counters=counters)
