"""structlog set-up for the client commands: events on stderr, for people or as JSON.

stdout is the commands' output (tables, summaries, ``-o -`` results), so logs never go
there.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def use_colour() -> bool:
    """Colours (ANSI codes) only on a terminal, and not when ``NO_COLOR`` is set to
    anything but the empty string (https://no-color.org)."""
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Send every event to stderr at ``level`` and above, as ``fmt`` (console or json)."""
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
