"""Test support: the CLI run as a user runs it, and where the real workload is.

A server of the tests' own is :class:`forkwire.client.local.LocalServer`, the launcher the
demo and ``report --db`` use.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_OPERATIONS = REPO.parent / "shared" / "data" / "operations.txt"


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
