"""Test support: a real server subprocess on a free port, and where the real workload is."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REAL_OPERATIONS = REPO.parent / "shared" / "data" / "operations.txt"
START_TIMEOUT = 30.0


@dataclass
class ServerProcess:
    """A ``forkwire-server`` subprocess and the JSON log events it printed."""

    proc: asyncio.subprocess.Process
    port: int
    events: list[dict[str, Any]] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    async def stop(self, signum: int | None = signal.SIGTERM, wait: float = 30.0) -> int:
        """Signal the server (unless ``signum`` is None) and wait for it to exit; return its
        exit status."""
        if signum is not None and self.proc.returncode is None:
            self.proc.send_signal(signum)
        try:
            code = await asyncio.wait_for(self.proc.wait(), wait)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._drain, 5.0)
        return code

    def named(self, event: str) -> list[dict[str, Any]]:
        """The log events called ``event``, in order."""
        return [entry for entry in self.events if entry.get("event") == event]


async def start_server(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``python -m forkwire.server`` on port 0 and wait for its ``server_started`` event."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "forkwire.server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-format",
        "json",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    assert proc.stderr is not None
    events: list[dict[str, Any]] = []

    async def read_event() -> dict[str, Any] | None:
        assert proc.stderr is not None
        line = await proc.stderr.readline()
        if not line:
            return None
        try:
            event: dict[str, Any] = json.loads(line)
        except ValueError:
            event = {"event": "raw", "text": line.decode(errors="replace")}
        events.append(event)
        return event

    async def until_started() -> int:
        while True:
            event = await read_event()
            if event is None:
                raise RuntimeError(f"server exited before starting: {events}")
            if event.get("event") == "server_started":
                return int(event["port"])

    try:
        port = await asyncio.wait_for(until_started(), START_TIMEOUT)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise

    async def drain() -> None:
        while await read_event() is not None:
            pass

    server = ServerProcess(proc, port, events)
    server._drain = asyncio.create_task(drain())
    return server


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m forkwire ARGS`` to completion, from the checkout, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "forkwire", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )
