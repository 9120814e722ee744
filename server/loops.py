"""Pick the event loop: uvloop where it imports, plain asyncio otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """Return uvloop's loop factory, or asyncio's when uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every POSIX platform
        return asyncio.new_event_loop
    return uvloop.new_event_loop
