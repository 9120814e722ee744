"""In JSON mode every line on stderr is one JSON object, whoever wrote it: structlog, the
standard library (asyncio, asyncpg, warnings), a thread, a job child's traceback. And no
secret of a storage URL is ever in it."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from typing import Any

import pytest
from fwtest import postgres_schema, run_code

from forkwire.server.app import _redact

PROVOKE = textwrap.dedent(
    """
    import asyncio, gc, logging, threading, warnings
    import structlog
    from forkwire.server.logs import configure_logging
    from forkwire.server.jobs import JobRunner

    configure_logging("json", "info")

    async def main():
        runner = JobRunner(workers=1, job_timeout=20)
        # Not a list of strings: the real job child raises, multiprocessing prints the
        # traceback on the child's stderr.
        outcome = await runner.run([None])
        assert outcome.errors and outcome.errors[0][1] == "worker_crashed", outcome
        logging.getLogger("asyncpg.pool").warning("connection %s was lost", "x")
        warnings.warn("something odd", RuntimeWarning)
        thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
        thread.start()
        thread.join()
        async def boom():
            raise ValueError("never retrieved")
        task = asyncio.ensure_future(boom())
        await asyncio.sleep(0.01)
        del task
        gc.collect()
        try:
            {}["missing"]
        except KeyError:
            structlog.get_logger("forkwire.test").exception("handled_error")

    asyncio.run(main())
    """
)


def _lines(stderr: str) -> list[dict[str, Any]]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n--- all of stderr:\n{stderr}")
    return parsed


def test_every_line_is_json_whoever_wrote_it() -> None:
    done = run_code(PROVOKE, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stderr)
    events = {line.get("event", ""): line for line in lines}
    child = [line for line in lines if line.get("event") == "child_stderr"]
    assert child, lines
    assert "TypeError" in child[0]["text"]
    assert child[0]["level"] == "error"
    assert events["connection x was lost"]["logger"] == "asyncpg.pool"
    assert any("something odd" in line.get("event", "") for line in lines)
    thread = events["thread_exception in doomed"]
    assert thread["exception"][0]["exc_type"] == "ZeroDivisionError"
    assert any("never retrieved" in json.dumps(line) for line in lines)
    handled = events["handled_error"]
    assert handled["exception"][0]["exc_type"] == "KeyError"


SECRETS = ("hunter2", "s3cr3t", "t0ken", "pa55", "p@ss")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:hunter2@db.example:5432/app",
        "postgresql://db.example/app?user=u&password=hunter2",
        "postgres://u@db/app?sslmode=require&sslpassword=s3cr3t&schema=fw",
        "postgresql://db/app?auth_token=t0ken;client_secret=s3cr3t",
        "postgresql://u:p@ss@db/app",
        "postgresql://db/app?password=p@ss&application_name=fw",
        "postgresql://u:pa55?x#y@db/app",
        "postgresql://db/app?x=a:b&PASSWORD=pa55#token=t0ken",
        "postgresql:///app?host=/run/pg&passfile=/x/hunter2",
    ],
)
def test_redact_removes_every_secret_and_keeps_the_rest(url: str) -> None:
    shown = _redact(url)
    for secret in SECRETS:
        assert secret not in shown, shown
    assert shown.split("://")[0] == url.split("://")[0]
    assert "db" in shown or "/app" in shown
    assert "***" in shown


def test_urls_without_secrets_are_kept_whole() -> None:
    for url in ("sqlite:///x/y.sqlite", "memory://", "postgresql://u@db:5432/app?schema=a"):
        assert _redact(url) == url


@pytest.mark.postgres
async def test_a_server_logs_json_without_the_password(tmp_path: Any) -> None:
    """A real server on PostgreSQL with a password in the query string and a sink: its
    whole log, start to stop, is JSON and never holds the password."""
    async with postgres_schema() as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "forkwire.server",
            *("--port", "0", "--no-udp", "--log-format", "json"),
            *("--db", f"{url}&password=hunter2", "--db", f"{url}&sslpassword=s3cr3t"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            first = await proc.stderr.readline()
            while b"server_started" not in first:
                first += await proc.stderr.readline()
        proc.terminate()
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
    text = (first + rest).decode()
    lines = _lines(text)
    assert any(line["event"] == "storage_opened" for line in lines)
    for secret in SECRETS:
        assert secret not in text
