"""forkwire report over a stream sent through a real server: dropouts and exact filling."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

from fwtest import run_cli

from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.protocol import Ack, Reading, ReadingsMsg

MISSING = {10, 11, 12, 40}


def signal(ts: float) -> float:
    """A linear signal: linear filling against time must reproduce it exactly."""
    return 3.0 * ts + 1.0


async def send_stream(port: int) -> None:
    """Seqs 0..50 with 10-12 and 40 missing, at irregular times, value = signal(ts)."""
    times = [1_000.0 + seq + (0.37 if seq % 3 == 0 else 0.0) + seq * seq / 100 for seq in range(51)]
    items = [
        Reading(sensor="lin", seq=seq, ts=ts, value=signal(ts))
        for seq, ts in enumerate(times)
        if seq not in MISSING
    ]
    connection = await Connection.open("127.0.0.1", port)
    async with connection:
        reply = await connection.request(ReadingsMsg(items=items))
        assert isinstance(reply, Ack)
        assert reply.acked == {"lin": [(0, 9), (13, 39), (41, 50)]}
        await connection.goodbye()


async def test_report_from_store_and_from_server(tmp_path: Path) -> None:
    """Exactly two dropouts (10-12 and 40), linear fill reproduces the signal, and the
    server's report request answers the same JSON."""
    store = tmp_path / "readings.sqlite"
    server = await LocalServer.start("--db", f"sqlite:///{store}")
    try:
        await send_stream(server.port)
        direct = await asyncio.to_thread(
            run_cli, "report", "--db", f"sqlite:///{store}", "--out", str(tmp_path / "direct")
        )
        remote = await asyncio.to_thread(
            run_cli, "report", "--port", str(server.port), "--out", str(tmp_path / "remote")
        )
    finally:
        await server.stop()

    assert direct.returncode == 0, direct.stderr
    assert remote.returncode == 0, remote.stderr
    report = json.loads((tmp_path / "direct" / "report.json").read_text())
    lin = report["sensors"]["lin"]
    assert [(d["first_seq"], d["last_seq"], d["count"]) for d in lin["dropouts"]] == [
        (10, 12, 3),
        (40, 40, 1),
    ]
    assert (lin["count"], lin["expected"], lin["lost"]) == (47, 51, 4)
    remote_report = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert remote_report["sensors"]["lin"]["dropouts"] == lin["dropouts"]

    with (tmp_path / "direct" / "filled.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    filled = {int(row["seq"]): row for row in rows if row["filled"] == "1"}
    assert set(filled) == MISSING
    for row in filled.values():
        assert abs(float(row["value"]) - signal(float(row["ts"]))) < 1e-9
    assert (tmp_path / "direct" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
