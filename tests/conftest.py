"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fwtest import REAL_OPERATIONS

from forkwire.client.local import LocalServer


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LocalServer]:
    """A running server with a fresh SQLite store, stopped (SIGTERM) after the test."""
    running = await LocalServer.start("--db", f"sqlite:///{tmp_path / 'readings.sqlite'}")
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def real_operations() -> Path:
    """The real 300,003-line workload from ../shared/data, or a skip saying it is absent."""
    if not REAL_OPERATIONS.exists():
        pytest.skip(f"the real workload is not at {REAL_OPERATIONS}")
    return REAL_OPERATIONS
