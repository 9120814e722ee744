"""The demo's own server: ``python -m forkwire.server`` as a subprocess; its SQLite read back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
from collections import deque
from pathlib import Path
from typing import Any, Final

from forkwire.client.demo.config import DemoError

_SERVER_START_TIMEOUT: Final = 30.0
_SERVER_STOP_TIMEOUT: Final = 10.0


class _DemoServer:
    """``python -m forkwire.server`` on a free port, its stderr drained, stopped with SIGTERM."""

    def __init__(self, proc: asyncio.subprocess.Process, started: dict[str, Any]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = int(started["port"])
        self.udp_port = int(started.get("udp_port") or self.port)
        #: Warnings and errors the server logged, one JSON line each, for the notes.
        self.warnings: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, db: Path, rcvbuf: int | None, workdir: Path) -> _DemoServer:
        """Start the server and wait for its ``server_started`` event.

        Raises:
            DemoError: it exited or stayed silent for ``_SERVER_START_TIMEOUT`` seconds.
        """
        args = ["--host", "127.0.0.1", "--port", "0", "--log-format", "json"]
        args += ["--db", f"sqlite:///{db}"]
        if rcvbuf is not None:
            args += ["--udp-rcvbuf", str(rcvbuf)]
        # cwd is a scratch folder: ``-m forkwire.server`` must not pick up a ``forkwire/``
        # folder that happens to sit in the user's current directory.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forkwire.server",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
        )
        lines: deque[str] = deque(maxlen=10)
        try:
            started = await asyncio.wait_for(_until_started(proc, lines), _SERVER_START_TIMEOUT)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError | DemoError):
                said = " | ".join(lines) or "nothing"
                raise DemoError(f"the demo's server did not start; it said: {said}") from None
            raise
        server = cls(proc, started)
        server._drain = asyncio.create_task(server._drain_stderr())
        return server

    async def _drain_stderr(self) -> None:
        # A full pipe would block the server's logging, and with it the server.
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("level") in ("warning", "error"):
                    self.warnings.append(f"server {event['level']}: {line.decode().strip()}")

    async def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), _SERVER_STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._drain, 5.0)


async def _until_started(proc: asyncio.subprocess.Process, lines: deque[str]) -> dict[str, Any]:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        text = line.decode(errors="replace").strip()
        lines.append(text)
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "server_started":
            return event
    raise DemoError("the server exited")


def _load_rows(db: Path, sensor: str) -> list[tuple[int, float, float]]:
    """``(seq, ts, received_at)`` of a sensor's stored readings, in arrival order."""
    with contextlib.closing(sqlite3.connect(db, timeout=10.0)) as connection:
        rows = connection.execute(
            "SELECT seq, ts, received_at FROM readings WHERE sensor = ? "
            "ORDER BY received_at, rowid",
            (sensor,),
        ).fetchall()
    return [(int(seq), float(ts), float(received)) for seq, ts, received in rows]
