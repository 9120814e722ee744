"""structlog set-up for the client commands: events on stderr, for people or as JSON.

stdout is the commands' output (tables, summaries, ``-o -`` results), so logs never go
there.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType
from typing import Any


def use_colour() -> bool:
    """Colours (ANSI codes) only on a terminal, and not when ``NO_COLOR`` is set to
    anything but the empty string (https://no-color.org)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


#: The set-up :func:`configure_logging` asked for, not applied yet (structlog is not
#: imported yet).
_pending: tuple[str, str] | None = None


class Logger:
    """structlog's logger ``name``, imported with structlog on the first event.

    structlog pulls in rich for its tracebacks: 45 ms of every command's start, measured,
    which a ``calc`` that logs nothing need not pay. Every client module gets its logger
    here.
    """

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._logger is None:
            self._logger = _structlog().get_logger(self._name)
        return getattr(self._logger, method)


def get_logger(name: str) -> Logger:
    """The logger for ``name`` (structlog's, once it logs)."""
    return Logger(name)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Send every event to stderr at ``level`` and above, as ``fmt`` (console or json).

    Applied now if structlog is imported already, else as it is, by the first event.
    """
    global _pending
    _pending = (level, fmt)
    if "structlog" in sys.modules:
        _structlog()


def _structlog() -> ModuleType:
    global _pending
    import structlog

    if _pending is not None:
        (level, fmt), _pending = _pending, None
        _apply(level, fmt)
    return structlog


def _apply(level: str, fmt: str) -> None:
    import structlog

    renderer: structlog.types.Processor
    if fmt == "json":
        stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
        renderer = structlog.processors.JSONRenderer()
        exceptions: list[structlog.types.Processor] = [structlog.processors.dict_tracebacks]
    else:
        stamp = structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S")
        renderer = structlog.dev.ConsoleRenderer(colors=use_colour())
        exceptions = []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            *exceptions,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
