"""A forkwire server of our own: ``python -m forkwire.server`` as a child process.

The client never imports the server; when it needs one of its own (the demo, ``report
--db``, the tests and the benchmarks), it starts one here on a free port, reads its JSON
log, and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from forkwire.client.errors import ClientError

START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
#: Log events kept for the caller; a long run's older events are forgotten.
MAX_EVENTS: Final = 100_000


class ServerFailed(ClientError):
    """The local server did not start."""


class LocalServer:
    """A running server child: its ports, its pid, and the log events it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, events: deque[dict[str, Any]]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.events = events
        started = self.named("server_started")[-1]
        self.port = int(started["port"])
        self.udp_port = int(started.get("udp_port") or self.port)
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> LocalServer:
        """Start ``forkwire.server ARGS`` on 127.0.0.1, port 0, logging JSON; wait until it
        logs ``server_started``.

        Args:
            cwd: where it runs (relative paths in ARGS are relative to it); Python runs
                with ``-P``, so a ``forkwire/`` folder there is never imported instead.

        Raises:
            ServerFailed: it exited, or said nothing useful for ``START_TIMEOUT`` seconds.
        """
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "forkwire.server",
            *("--host", "127.0.0.1", "--port", "0", "--log-format", "json", *args),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env={**_inherited(), **(env or {})},
        )
        events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        try:
            await asyncio.wait_for(_until_started(proc, events), START_TIMEOUT)
        except BaseException as exc:
            if not isinstance(exc, ServerFailed):
                # Still running (timed out, or we were cancelled). A server that closed its
                # stderr is exiting: killing it would make Popen reap it behind asyncio's
                # child watcher, which then logs "Unknown child process" on our stderr.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError | ServerFailed):
                said = " | ".join(_said(event) for event in list(events)[-5:])
                raise ServerFailed(
                    f"the local server did not start; it said: {said or 'nothing'}"
                ) from None
            raise
        server = cls(proc, events)
        server._drain = asyncio.create_task(server._read_log())
        return server

    def named(self, event: str) -> list[dict[str, Any]]:
        """The log events called ``event``, in order."""
        return [entry for entry in self.events if entry.get("event") == event]

    @property
    def warnings(self) -> list[str]:
        """Warnings and errors the server logged, one line each."""
        return [
            f"server {e['level']}: {json.dumps(e)}"
            for e in self.events
            if e.get("level") in ("warning", "error")
        ]

    async def stop(self, signum: int | None = signal.SIGTERM, wait: float = STOP_TIMEOUT) -> int:
        """Signal the server (unless ``signum`` is None), wait for it, kill it after
        ``wait`` seconds; return its exit status."""
        if signum is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)
        try:
            code = await asyncio.wait_for(self.proc.wait(), wait)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            code = await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._drain, 5.0)
        return code

    async def _read_log(self) -> None:
        # Read to the end: a full pipe would block the server's logging, and the server.
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.events.append(_event(line))


@contextlib.asynccontextmanager
async def local_server(*args: str, cwd: Path | None = None) -> AsyncIterator[LocalServer]:
    """A :class:`LocalServer` for the duration of a ``with`` block."""
    server = await LocalServer.start(*args, cwd=cwd)
    try:
        yield server
    finally:
        await server.stop()


#: A client's environment names the server it talks to (FORKWIRE_TOKEN is the clients'
#: variable too): a server of our own gets its token or certificate only when asked.
_NOT_INHERITED: Final = frozenset(
    {
        "FORKWIRE_TOKEN",
        "FORKWIRE_TOKEN_FILE",
        "FORKWIRE_TLS_CERT",
        "FORKWIRE_TLS_KEY",
        "FORKWIRE_TLS_CLIENT_CA",
    }
)


def _inherited() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in _NOT_INHERITED}


async def _until_started(proc: asyncio.subprocess.Process, events: deque[dict[str, Any]]) -> None:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        event = _event(line)
        events.append(event)
        if event.get("event") == "server_started":
            return
    raise ServerFailed("the server exited")


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if isinstance(event, dict):
        return event
    return {"event": "raw", "text": line.decode(errors="replace").strip()}


def _said(event: dict[str, Any]) -> str:
    """One line of what the server logged: a plain line as it was, an event by its
    sentence when it has one (a start that failed: without the program's name), else by
    its name."""
    if "text" in event:
        return str(event["text"])
    message = event.get("message")
    if isinstance(message, str):
        return message.removeprefix("forkwire-server: ")
    return str(event.get("event", "?"))
