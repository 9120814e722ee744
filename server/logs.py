"""structlog set-up: readable on a terminal, one JSON object per line otherwise."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Literal

import structlog


def configure_logging(
    fmt: Literal["auto", "console", "json"] = "auto", level: str = "info"
) -> None:
    """Route every event to stderr through one processor pipeline."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *_: _StderrLogger(sys.stderr),
        cache_logger_on_first_use=True,
    )


class _StderrLogger(structlog.PrintLogger):
    """A PrintLogger that never raises: a closed or broken stderr (a supervisor that went
    away, a pipe nobody reads) must not stop a signal handler or a shutdown half-way."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg
    failure = msg
