"""A job child's stderr as JSON lines, when the server logs JSON.

Whatever a child writes to stderr (multiprocessing's traceback of an exception that ends
it, a warning) would land in the server's log as raw text, breaking a JSON log's "one
object per line". The child replaces its ``sys.stderr`` with :class:`JsonStderr`, which
gathers the text until a flush (multiprocessing flushes after printing a traceback) and
writes it as one JSON object. Only the standard library: this runs in every child.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import TextIO

#: The environment variable the server sets when its log is JSON.
CHILD_LOG_ENV = "_FORKWIRE_CHILD_LOG"


class JsonStderr(io.TextIOBase):
    """A text stream that writes what it is given as ``{"event": "child_stderr", ...}``."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw
        self._parts: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        text = "".join(self._parts).rstrip("\n")
        self._parts.clear()
        if not text:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        line = {
            "event": "child_stderr",
            "level": "error" if "Traceback" in text else "warning",
            "pid": os.getpid(),
            "text": text,
            "logger": "forkwire.job",
            "timestamp": f"{stamp}Z",
        }
        try:
            self._raw.write(json.dumps(line) + "\n")
            self._raw.flush()
        except (OSError, ValueError):
            pass


def json_stderr_if_asked() -> None:
    """In a child: route ``sys.stderr`` through :class:`JsonStderr` when the server's log
    is JSON (the variable is in the environment the forkserver inherited)."""
    if os.environ.get(CHILD_LOG_ENV) == "json" and not isinstance(sys.stderr, JsonStderr):
        sys.stderr = JsonStderr(sys.__stderr__ or sys.stderr)
