"""structlog set-up: readable on a terminal, one JSON object per line otherwise; and a
rate-limited log for events that others can repeat at will."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Literal

import structlog

# Set in the environment when the log is JSON, so that job children (forked from the
# forkserver, which inherits it) write their own stderr as JSON lines too.
from forkwire.server.childlog import CHILD_LOG_ENV


def json_lines(fmt: Literal["auto", "console", "json"]) -> bool:
    """Whether stderr gets JSON lines: asked for, or ``auto`` off a terminal."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def configure_logging(
    fmt: Literal["auto", "console", "json"] = "auto", level: str = "info"
) -> None:
    """Route every event to stderr through one processor pipeline: structlog's, the
    standard library's (asyncio, asyncpg, ``warnings``), uncaught exceptions of threads
    and unraisable ones, and (through :data:`CHILD_LOG_ENV`) what job children write.

    In JSON mode every line is one JSON object, an exception a structured field of it.
    """
    use_console = not json_lines(fmt)
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    # The console renders tracebacks itself; JSON gets them as a list of frames.
    exceptions: structlog.types.Processor = (
        structlog.processors.format_exc_info
        if use_console
        else structlog.processors.dict_tracebacks
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *_: _StderrLogger(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # warnings.warn (a DeprecationWarning, numpy's RuntimeWarning) goes to "py.warnings".
    logging.captureWarnings(True)
    stdlib = logging.getLogger("forkwire.uncaught")
    threading.excepthook = lambda args: stdlib.error(
        "thread_exception in %s",
        getattr(args.thread, "name", "a thread"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )
    sys.unraisablehook = lambda args: stdlib.error(
        "unraisable_exception: %s",
        args.err_msg or "exception ignored",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )
    if use_console:
        os.environ.pop(CHILD_LOG_ENV, None)
    else:
        os.environ[CHILD_LOG_ENV] = "json"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's lines on the current stderr, never raising (as below)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        with contextlib.suppress(OSError, ValueError):
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # The stdlib would print a traceback to stderr: the very stream that failed.
        pass


class _StderrLogger(structlog.PrintLogger):
    """A PrintLogger that never raises: a closed or broken stderr (a supervisor that went
    away, a pipe nobody reads) must not stop a signal handler or a shutdown half-way."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg
    failure = msg


class RateLimitedLog:
    """One log line for a burst of the same event: the first occurrence at once, then at
    most one per ``every`` seconds, saying how many were folded into it (``suppressed``).

    For events an outside party can repeat at will (refused connections, oversize frames,
    a storage outage hit by every batch of every client): a line per occurrence would let
    them fill the disk and drown everything else. ``key`` separates what is counted apart
    (an event per peer, say); the keys remembered are bounded, the oldest forgotten first.

    Args:
        logger: a structlog logger.
        every: seconds between two lines of one key.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        logger: Any,
        every: float = 10.0,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        self._log = logger
        self.every = every
        self._max_keys = max_keys
        self._clock = clock
        # key -> [time of the last line, occurrences since it, time of the first one]
        self._state: OrderedDict[Hashable, list[float]] = OrderedDict()

    def log(self, level: str, event: str, /, key: Hashable = None, **fields: Any) -> bool:
        """Log ``event`` at ``level`` unless a line of it (of ``key``) went out less than
        ``every`` seconds ago; return whether it was logged."""
        now = self._clock()
        name = (event, key)
        state = self._state.get(name)
        if state is not None and now - state[0] < self.every:
            state[1] += 1
            return False
        if state is None:
            state = self._state[name] = [now, 0, now]
            while len(self._state) > self._max_keys:
                self._state.popitem(last=False)
        else:
            self._state.move_to_end(name)
            fields["suppressed"] = int(state[1])
            fields["since_first_s"] = round(now - state[2], 3)
            state[0], state[1] = now, 0
        getattr(self._log, level)(event, **fields)
        return True

    def error(self, event: str, /, key: Hashable = None, **fields: Any) -> bool:
        """:meth:`log` at error level."""
        return self.log("error", event, key, **fields)

    def warning(self, event: str, /, key: Hashable = None, **fields: Any) -> bool:
        """:meth:`log` at warning level."""
        return self.log("warning", event, key, **fields)

    def info(self, event: str, /, key: Hashable = None, **fields: Any) -> bool:
        """:meth:`log` at info level."""
        return self.log("info", event, key, **fields)

    def forget(self, event: str, key: Hashable = None) -> int:
        """End a burst (the condition cleared): the next occurrence logs at once. Return how
        many occurrences were not logged since the last line."""
        state = self._state.pop((event, key), None)
        return 0 if state is None else int(state[1])
