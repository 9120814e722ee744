"""The benchmarks' server: a ``python -m forkwire.server`` subprocess on a free port."""

from __future__ import annotations

import json
import subprocess
import sys
import threading


def start_server(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start the server with ``args``; return it and the port from its started event."""
    command = [
        sys.executable,
        "-m",
        "forkwire.server",
        "--port",
        "0",
        "--log-format",
        "json",
        *args,
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stderr is not None
    for raw in proc.stderr:
        event = json.loads(raw)
        if event.get("event") == "server_started":
            # Keep reading its log so the pipe never fills and blocks the server.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(event["port"])
    raise SystemExit("the server exited before it started")
