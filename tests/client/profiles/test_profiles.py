"""The profile pipeline: ages on a date, the CLI's checks, and real runs."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fwtest import REPO, free_port, run_cli

from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.client.profiles.children import age_on
from forkwire.protocol import Ack, Reading, ReadingsMsg

#: Every wait here is bounded by this.
WAIT = 90.0
SENT = re.compile(r"^sent: (.+), ([MF]), (.+), (\d+) years?$")
SUMMARY = re.compile(r"generated (\d+), kept (\d+), sent (\d+), retried (\d+)")


def test_age_counts_whole_years_on_the_day() -> None:
    """An age goes up on the birthday, and on 1 March for a 29 February birthday."""
    assert age_on(date(1990, 6, 15), date(2024, 6, 14)) == 33
    assert age_on(date(1990, 6, 15), date(2024, 6, 15)) == 34
    assert age_on(date(2000, 2, 29), date(2023, 2, 28)) == 22
    assert age_on(date(2000, 2, 29), date(2023, 3, 1)) == 23


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0"], "Invalid value for 'COUNT': Input should be greater than or equal to 1"),
        (["ten"], "Invalid value for 'COUNT': Input should be a valid integer"),
        (["5", "--format", "xml"], "'xml' is not one of 'json', 'pickle'"),
        (["5", "--ages", "40-30"], "ages must be 0 <= LOW <= HIGH"),
    ],
    ids=["zero", "not-int", "xml", "ages"],
)
def test_bad_arguments_are_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """A COUNT below 1 or not an int, an unknown format or bad ages: exit 2, said clearly."""
    done = run_cli("profiles", *args, "--spool", str(tmp_path / "s.jsonl"), "--port", "1")
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split()), done.stderr
    assert not (tmp_path / "s.jsonl").exists()


def stored_profiles(store: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """The ``profiles`` stream's records by producer, then by seq."""
    stored: dict[str, dict[int, dict[str, Any]]] = {}
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT producer, seq, value FROM readings WHERE sensor = 'profiles'")
        for producer, seq, value in rows:
            stored.setdefault(producer, {})[seq] = json.loads(value)
    return stored


async def run_profiles_cli(
    *args: str, failures_before: int = 0, on_failures: Any = None
) -> tuple[int, list[str], str]:
    """Run ``forkwire profiles``; after ``failures_before`` failed sends call
    ``on_failures()``. Returns the exit status, stdout lines and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "forkwire.client", "profiles", *args],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    err: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            failed = 0
            while failed < failures_before:
                line = (await proc.stderr.readline()).decode()
                assert line, "".join(err)
                err.append(line)
                failed += "send failed" in line
            if on_failures is not None:
                await on_failures()
            out, rest = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines(), "".join(err) + rest.decode()


async def test_profiles_survive_a_server_that_is_not_there_yet(tmp_path: Path) -> None:
    """The server starts only after three failed sends: the sender backs off, retries,
    and in the end every kept profile is stored once, each `sent:` line names a stored
    record in the age range, and the spool is empty; a second run continues the seqs; a
    run on a fresh spool is another producer, whose records are stored in full too."""
    port = free_port()
    store = tmp_path / "readings.sqlite"
    spool = tmp_path / "spool.jsonl"
    common = ["--interval", "0", "--ages", "20-60", "--spool", str(spool), "--port", str(port)]
    servers: list[LocalServer] = []

    async def start() -> None:
        servers.append(await LocalServer.start("--db", f"sqlite:///{store}", "--port", str(port)))

    try:
        code, out, err = await run_profiles_cli(
            "120", *common, "--drain-timeout", "60", "--seed", "1",
            failures_before=3, on_failures=start,
        )  # fmt: skip
        assert code == 0, err
        second = await run_profiles_cli("40", *common, "--drain-timeout", "30")
        fresh = [*common[:-4], "--spool", str(tmp_path / "fresh.jsonl"), *common[-2:]]
        third = await run_profiles_cli("30", *fresh, "--drain-timeout", "30")
    finally:
        for server in servers:
            await server.stop()

    summary = SUMMARY.search(out[-1])
    assert summary is not None, out
    generated, kept, sent, retried = map(int, summary.groups())
    assert (generated, sent) == (120, kept)
    assert retried > 0
    assert kept > 0
    by_producer = stored_profiles(store)
    producer = (tmp_path / "spool.jsonl.producer").read_text().strip()
    assert len(producer) == 32
    stored = by_producer[producer]
    first_run = {seq: stored[seq] for seq in range(kept)}
    sent_lines = [SENT.match(line) for line in out[:-1]]
    assert all(sent_lines), out
    printed = sorted(m.groups() for m in sent_lines if m is not None)
    assert printed == sorted(
        (p["name"], p["sex"], p["job"], str(p["age"])) for p in first_run.values()
    )
    today = date.today()
    for record in (r for records in by_producer.values() for r in records.values()):
        assert 20 <= record["age"] <= 60
        assert record["age"] == age_on(date.fromisoformat(record["birthdate"]), today)

    # The second run: new seqs after the first run's, nothing deduplicated away.
    code2, out2, err2 = second
    assert code2 == 0, err2
    summary2 = SUMMARY.search(out2[-1])
    assert summary2 is not None
    kept2 = int(summary2.group(2))
    assert sorted(stored) == list(range(kept + kept2))
    assert (tmp_path / "spool.jsonl.seq").read_text().strip() == str(kept + kept2)
    assert spool.read_bytes() == b""
    assert "left in spool 0" in out2[-1]

    # The fresh spool starts at seq 0 again, under its own producer: nothing is taken for
    # a duplicate of the first spool's records.
    code3, out3, err3 = third
    assert code3 == 0, err3
    summary3 = SUMMARY.search(out3[-1])
    assert summary3 is not None
    kept3 = int(summary3.group(2))
    fresh_producer = (tmp_path / "fresh.jsonl.producer").read_text().strip()
    assert fresh_producer not in ("", producer)
    assert sorted(by_producer[fresh_producer]) == list(range(kept3))
    assert set(by_producer) == {producer, fresh_producer}


async def test_a_record_the_server_holds_with_another_value_is_refused(tmp_path: Path) -> None:
    """The server already holds seq 0 of this spool's producer with another value: the
    sender drops that record as a conflict (counted in the summary), stores the rest,
    and leaves nothing in the spool."""
    port = free_port()
    store = tmp_path / "readings.sqlite"
    spool = tmp_path / "spool.jsonl"
    producer = "ab" * 16
    (tmp_path / "spool.jsonl.producer").write_text(producer + "\n")
    server = await LocalServer.start("--db", f"sqlite:///{store}", "--port", str(port))
    try:
        async with await Connection.open("127.0.0.1", port) as connection:
            taken = Reading(sensor="profiles", seq=0, ts=1.0, value={"name": "someone else"})
            ack = await connection.request(ReadingsMsg(producer=producer, items=[taken]))
            assert isinstance(ack, Ack)
        code, out, err = await run_profiles_cli(
            "20", "--interval", "0", "--ages", "0-120", "--spool", str(spool),
            "--port", str(port), "--drain-timeout", "30", "--seed", "2",
        )  # fmt: skip
    finally:
        await server.stop()
    assert code == 0, err
    assert "refused as conflicts 1," in out[-1], out[-1]
    assert "left in spool 0" in out[-1]
    assert "server refused records whose key it holds with another value" in err
    stored = stored_profiles(store)[producer]
    assert stored[0] == {"name": "someone else"}
    assert sorted(stored) == list(range(20))


async def test_ctrl_c_ends_with_130_and_says_what_waits_in_the_spool(tmp_path: Path) -> None:
    """The first Ctrl-C stops the pipeline in order: the summary, then status 130 and one
    line counting the profiles left in the spool."""
    server = await LocalServer.start("--db", f"sqlite:///{tmp_path / 'r.sqlite'}")
    spool = tmp_path / "spool.jsonl"
    try:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, str(REPO / "tests" / "foreground.py"), "profiles", "100000"],
            *["--interval", "0.01", "--ages", "0-200", "--spool", str(spool)],
            *["--port", str(server.port)],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        try:
            await asyncio.sleep(3)
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    finally:
        await server.stop()
    assert proc.returncode == 130, err.decode()
    assert b"generated" in out
    last = err.decode().splitlines()[-1]
    assert last.startswith("forkwire: interrupted; "), last
    assert last.endswith(f"profiles wait in the spool {spool}"), last
