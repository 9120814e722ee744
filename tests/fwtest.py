"""Test support: the CLI run as a user runs it, a free port, and where the real workload is.

A server of the tests' own is :class:`forkwire.client.local.LocalServer`, the launcher the
demo and ``report --db`` use.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from forkwire.server.interpreter import ExpressionError, Limits, evaluate

REPO = Path(__file__).resolve().parents[1]
REAL_OPERATIONS = REPO.parent / "shared" / "data" / "operations.txt"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_cli(
    *args: str,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m forkwire ARGS`` to completion, from the checkout, output captured;
    ``env`` is added to the environment, ``input`` is its stdin (none by default)."""
    return _run([sys.executable, "-m", "forkwire", *args], timeout, env, input)


def run_code(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE ARGS`` like :func:`run_cli` (to run the CLI with a change)."""
    return _run([sys.executable, "-c", code, *args], timeout, None, None)


def _run(
    argv: list[str], timeout: float, env: dict[str, str] | None, input: str | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        check=False,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


POSTGRES_URL = os.environ.get("FORKWIRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_postgres_problem: list[str | None] = []  # the probe's answer, cached for the session


async def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None; probed once."""
    import asyncpg

    if not _postgres_problem:
        try:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _postgres_problem.append(f"PostgreSQL at {POSTGRES_URL} unreachable: {exc!r}")
        else:
            await conn.close()
            _postgres_problem.append(None)
    return _postgres_problem[0]


async def require_postgres() -> None:
    """Skip the test, saying why, when PostgreSQL is not there; under
    ``FORKWIRE_REQUIRE_POSTGRES=1`` (CI) fail instead."""
    import pytest

    problem = await postgres_problem()
    if problem is not None:
        if os.environ.get("FORKWIRE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{problem} (and FORKWIRE_REQUIRE_POSTGRES=1)")
        pytest.skip(problem)


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A PostgreSQL store URL in a schema of its own (``?schema=fw_test_<hex>``), dropped
    with CASCADE afterwards, so tests never see each other's rows."""
    import asyncpg

    await require_postgres()
    schema = f"fw_test_{uuid.uuid4().hex}"
    try:
        yield f"{POSTGRES_URL}?schema={schema}"
    finally:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def outcome(text: str, limits: Limits) -> tuple[object, ...]:
    """What the interpreter makes of ``text``: (type, repr) of its value, or (code,)."""
    try:
        value = evaluate(text, limits)
    except ExpressionError as exc:
        return (exc.code,)
    return (type(value), repr(value))
