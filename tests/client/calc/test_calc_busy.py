"""The calc client against a real server that refuses jobs as ``busy``: it backs off and
sends them again, and every line is answered."""

from __future__ import annotations

import io
from pathlib import Path

from forkwire.client.calc.run import run_calc
from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer


async def test_jobs_refused_as_busy_are_sent_again(tmp_path: Path) -> None:
    # One worker, nothing may wait: every job that arrives while one runs is refused.
    server = await LocalServer.start(
        "--db", f"sqlite:///{tmp_path / 'r.sqlite'}", "--workers", "1", "--max-queued-jobs", "0"
    )
    try:
        lines = [f"2 ** 4000 * 3 ** 2000 // 7 ** 900 - {n}" for n in range(1200)]
        out = io.StringIO()
        summary = await run_calc(
            lines,
            out,
            lambda: Connection.open("127.0.0.1", server.port),
            connections=2,
            batch=100,
            window=8,
        )
    finally:
        await server.stop()
    answers = out.getvalue().splitlines()
    assert len(answers) == len(lines)
    assert not [line for line in answers if line.startswith("error")]
    expected = 2**4000 * 3**2000 // 7**900
    assert answers[5] == str(expected - 5)
    assert summary.retries > 0
