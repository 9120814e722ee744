"""structlog set-up: readable on a terminal, one JSON object per line otherwise; and a
rate-limited log for events that others can repeat at will."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Literal

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
