"""Test support: the CLI run as a user runs it, a free port, and where the real workload is.

A server of the tests' own is :class:`forkwire.client.local.LocalServer`, the launcher the
demo and ``report --db`` use.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_OPERATIONS = REPO.parent / "shared" / "data" / "operations.txt"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_cli(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m forkwire ARGS`` to completion, from the checkout, output captured;
    ``env`` is added to the environment."""
    return _run([sys.executable, "-m", "forkwire", *args], timeout, env)


def run_code(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE ARGS`` like :func:`run_cli` (to run the CLI with a change)."""
    return _run([sys.executable, "-c", code, *args], timeout, None)


def _run(
    argv: list[str], timeout: float, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
