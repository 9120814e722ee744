"""CSV replay: a file streamed through the fleet to a real server, and its input errors."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from fwtest import REPO, run_cli

from forkwire.client.local import LocalServer
from forkwire.client.replay.rows import parse_number
from forkwire.client.replay.run import ReplayConfig, run_replay
from forkwire.client.sensors.outbox import Outbox

#: Every wait here is bounded by this.
WAIT = 60.0


def write_csv(path: Path, rows: int = 50) -> Path:
    """A CSV of ``rows`` rows: an int, a float, a quoted text with a comma."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["n", "temp", "city"])
        for i in range(rows):
            writer.writerow([i, f"{i * 0.5 - 3:.2f}", f"Town, {i}"])
    return path


def stored_values(store: Path, sensor: str) -> dict[int, object]:
    """The stored values of ``sensor`` by seq."""
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT seq, value FROM readings WHERE sensor = ?", (sensor,))
        return {seq: json.loads(value) for seq, value in rows}


async def test_fifty_rows_at_interval_zero_end_stored_and_in_out(
    server: LocalServer, tmp_path: Path
) -> None:
    """50 rows at interval 0: the run ends by itself with 50 stored records and 50 lines."""
    data = write_csv(tmp_path / "weather.csv")
    out = tmp_path / "out9.txt"
    config = ReplayConfig(
        file=data,
        interval=(0, 0),
        out=out,
        port=server.port,
        outbox=tmp_path / "outbox.sqlite",
    )
    summary = await asyncio.wait_for(run_replay(config), WAIT)

    assert (summary.sensor, summary.rows, summary.acked, summary.pending) == ("weather", 50, 50, 0)
    assert summary.exhausted
    values = stored_values(tmp_path / "readings.sqlite", "weather")
    assert sorted(values) == list(range(50))
    assert values[7] == {"n": 7, "temp": 0.5, "city": "Town, 7"}
    with out.open(encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle))
    assert len(lines) == 50
    assert [int(line[0]) for line in lines] == list(range(50))
    assert lines[7][2:] == ["7", "0.50", "Town, 7"]
    assert all(float(line[1]) > 0 for line in lines)


async def test_column_values_are_numbers(server: LocalServer, tmp_path: Path) -> None:
    """--column sends the cell as a number: an int column stays int, a decimal is a float."""
    data = write_csv(tmp_path / "data.csv", rows=10)
    outbox = tmp_path / "outbox.sqlite"
    for column, sensor in (("n", "ints"), ("temp", "floats")):
        config = ReplayConfig(
            file=data,
            sensor=sensor,
            column=column,
            interval=(0, 0),
            port=server.port,
            outbox=outbox,
        )
        await asyncio.wait_for(run_replay(config), WAIT)
    store = tmp_path / "readings.sqlite"
    ints, floats = stored_values(store, "ints"), stored_values(store, "floats")
    assert [ints[seq] for seq in range(10)] == list(range(10))
    assert all(type(value) is int for value in ints.values())
    assert [floats[seq] for seq in range(10)] == [i * 0.5 - 3 for i in range(10)]
    assert all(isinstance(value, float) for value in floats.values())


async def test_a_looping_replay_stops_cleanly_on_ctrl_c(
    server: LocalServer, tmp_path: Path
) -> None:
    """--loop goes past the end with rising seqs; SIGINT ends it with the summary, status
    130 and a line saying how many rows wait in the outbox; every line of --out is either
    stored or still in the outbox."""
    data = write_csv(tmp_path / "small.csv", rows=3)
    out, outbox = tmp_path / "out9.txt", tmp_path / "outbox.sqlite"
    proc = await asyncio.create_subprocess_exec(
        # Through tests/foreground.py: SIGINT must not be inherited as ignored.
        *[sys.executable, str(REPO / "tests" / "foreground.py"), "replay", str(data), "--loop"],
        *["--interval", "0.02"],
        *["--out", str(out), "--outbox", str(outbox), "--port", str(server.port)],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(WAIT):
            # The replay logs each start from the top: after the third, the first two
            # passes (6 rows) are in --out.
            while b"passes=3" not in await proc.stderr.readline():
                pass
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, stderr.decode()
    assert b"rows sent" in stdout
    assert stderr.decode().splitlines()[-1].startswith("forkwire: interrupted; ")
    assert f"rows not yet acked wait in the outbox {outbox}" in stderr.decode()
    lines = out.read_text().splitlines()
    seqs = [int(line.split(",")[0]) for line in lines]
    assert seqs == list(range(len(seqs)))
    assert len(seqs) >= 6
    with Outbox(outbox) as left:
        pending = {reading.seq for reading in left.pending("small")}
    assert set(stored_values(tmp_path / "readings.sqlite", "small")) | pending == set(seqs)


def test_a_missing_column_is_exit_2_before_anything_is_sent(tmp_path: Path) -> None:
    """--column naming no column: exit 2 naming the column and the file's columns."""
    data = write_csv(tmp_path / "data.csv", rows=2)
    # Port 1 would refuse: the error must come before any connection is tried.
    files = ["--out", str(tmp_path / "out.txt"), "--outbox", str(tmp_path / "o.sqlite")]
    done = run_cli("replay", str(data), "--column", "pressure", "--port", "1", *files)
    assert done.returncode == 2
    assert "column 'pressure' is not in" in done.stderr
    assert "n, temp, city" in done.stderr
    assert not (tmp_path / "o.sqlite").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "is empty"),
        (b"a,b\n", "has a header but no rows"),
        (b"\xff\xfe\x00bad", "is not UTF-8"),
    ],
    ids=["missing", "empty", "header-only", "binary"],
)
def test_an_unusable_file_is_exit_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    """A missing, empty, header-only or binary file: exit 2 with a one-line reason."""
    data = tmp_path / "data.csv"
    if content is not None:
        data.write_bytes(content)
    files = ["--out", str(tmp_path / "out.txt"), "--outbox", str(tmp_path / "o.sqlite")]
    done = run_cli("replay", str(data), "--port", "1", *files)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.startswith("forkwire: ")


def test_parse_number() -> None:
    """Ints stay ints, decimals become floats, anything else (nan too) is not a number."""
    assert parse_number("42") == 42
    assert type(parse_number(" -7 ")) is int
    assert parse_number("2.5") == 2.5
    assert parse_number("1e3") == 1000.0
    assert parse_number(str(2**70)) == float(2**70)
    for text in ("", "abc", "nan", "inf", "1_000", "1,5"):
        assert parse_number(text) is None
