"""Attack 4 of issue 11: one stored reading must not break ``report`` for anyone.

Readings beyond the ingest limits (a 400-digit int, two 1.7e308, timestamps of
+-1.7e308) are put straight into a store, as another writer or an older server could have,
and the report is asked of a real server and of ``forkwire report --db``. Ingest of such
readings over the wire is refused with ``bad_message``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fwtest import postgres_schema, run_cli

from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.protocol import (
    MAX_REPORT_DROPOUTS,
    Ack,
    Error,
    ReadingsMsg,
    Report,
    ReportResult,
    Series,
    SeriesResult,
)
from forkwire.server.storage import Entry, open_repository

POISON = [
    Entry("bigint", "", 0, 1.0, "1" * 400),
    Entry("bigint", "", 1, 2.0, "5"),
    Entry("bigfloat", "", 0, 1.0, "1.7e308"),
    Entry("bigfloat", "", 1, 2.0, "1.7e308"),
    Entry("bigfloat", "", 3, 3.0, "-1.7e308"),
    Entry("far_ts", "", 0, -1.7e308, "1"),
    Entry("far_ts", "", 1, 1.7e308, "2"),
    Entry("far_ts", "", 3, 1.7e308, "2"),
    Entry("vec", "", 0, 1.0, "[1.7e308,1.7e308]"),
    Entry("vec", "", 2, 2.0, "[1.0,2.0]"),
    Entry("fine", "", 0, 1.0, "1.5"),
    Entry("fine", "", 1, 2.0, "2.5"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def poisoned(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL holding the poisonous readings."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'poison.sqlite'}"
        await _fill(url, POISON)
        yield url
    else:
        async with postgres_schema() as url:
            await _fill(url, POISON)
            yield url


async def _fill(url: str, entries: list[Entry]) -> None:
    repo = await open_repository(url)
    try:
        await repo.add_many(entries, 1.0)
    finally:
        await repo.close()


def _check(report: dict[str, object]) -> None:
    sensors = report["sensors"]
    assert isinstance(sensors, dict)
    assert set(sensors) == {"bigint", "bigfloat", "far_ts", "vec", "fine"}
    assert sensors["fine"]["stats"]["mean"] == 2.0
    assert sensors["bigint"]["values_skipped"] == 1
    assert sensors["bigint"]["stats"]["mean"] == 5.0
    big = sensors["bigfloat"]["stats"]
    assert big["max"] == 1.7e308
    assert all(math.isfinite(big[name]) for name in ("mean", "std", "p50", "p95", "p99"))
    far_ts = sensors["far_ts"]
    assert far_ts["ts_clamped"] == 3
    assert far_ts["rate_hz"] is not None
    assert far_ts["rate_hz"] > 0
    assert far_ts["lost"] == 1
    assert sensors["vec"]["values_skipped"] == 1  # its norm is beyond float range


async def test_a_server_reports_over_poisoned_stores(poisoned: str) -> None:
    server = await LocalServer.start("--db", poisoned, "--no-udp")
    try:
        connection = await Connection.open("127.0.0.1", server.port)
        async with connection:
            reply = await connection.request(Report())
            assert isinstance(reply, ReportResult), reply
            _check(json.loads(json.dumps(reply.report)))
            for sensor in ("bigint", "bigfloat", "far_ts", "vec"):
                for fill in ("linear", "previous"):
                    page = await connection.request(Series(sensor=sensor, fill=fill))
                    assert isinstance(page, SeriesResult), page
            # And the store still takes readings and reports them.
            ok = await connection.request(
                ReadingsMsg.model_validate(
                    {"items": [{"sensor": "fine", "seq": 2, "ts": 3.0, "value": 3.5}]}
                )
            )
            assert isinstance(ok, Ack)
    finally:
        await server.stop()


async def test_report_from_a_poisoned_store(poisoned: str, tmp_path: Path) -> None:
    done = await asyncio.to_thread(run_cli, "report", "--db", poisoned, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    _check(json.loads((tmp_path / "report.json").read_text()))
    assert (tmp_path / "filled.csv").exists()


@pytest.mark.parametrize(
    ("field", "item"),
    [
        ("value", {"ts": 1.0, "value": 10**400}),
        ("value", {"ts": 1.0, "value": 2**63}),
        ("value", {"ts": 1.0, "value": 1.7e308}),
        ("value", {"ts": 1.0, "value": [1.0, -1.7e308]}),
        ("value", {"ts": 1.0, "value": {"deep": [{"x": 10**30}]}}),
        ("ts", {"ts": 1.7e308, "value": 1.0}),
        ("ts", {"ts": -1.7e308, "value": 1.0}),
        ("ts", {"ts": -1.0, "value": 1.0}),
    ],
    ids=["int400", "int2**63", "float", "vector", "record", "ts-high", "ts-low", "ts-negative"],
)
async def test_ingest_refuses_values_and_ts_beyond_the_limits(
    server: LocalServer, field: str, item: dict[str, object]
) -> None:
    """A bad_message naming the field; the connection goes on and nothing is stored."""
    body = json.dumps({"type": "readings", "items": [{"sensor": "s", "seq": 0, **item}]})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        payload = body.encode()
        writer.write(len(payload).to_bytes(4, "big") + payload)
        size = int.from_bytes(await reader.readexactly(4), "big")
        reply = json.loads(await reader.readexactly(size))
    finally:
        writer.close()
    assert (reply["type"], reply["code"]) == ("error", "bad_message"), reply
    assert f"items.0.{field}:" in reply["message"]
    connection = await Connection.open("127.0.0.1", server.port)
    async with connection:
        report = await connection.request(Report())
        assert isinstance(report, ReportResult | Error)
        if isinstance(report, ReportResult):
            assert report.report["sensors"] == {}


async def test_a_report_of_many_dropouts_is_bounded(tmp_path: Path) -> None:
    """20,000 dropouts: the report lists 100 and counts the rest; report --db draws it."""
    url = f"sqlite:///{tmp_path / 'holes.sqlite'}"
    await _fill(url, [Entry("holes", "", 2 * i, 1000.0 + i, str(i % 5)) for i in range(20_001)])
    done = await asyncio.to_thread(
        run_cli, "report", "--db", url, "--out", str(tmp_path / "out"), "--fill", "none"
    )
    assert done.returncode == 0, done.stderr
    report_file = tmp_path / "out" / "report.json"
    holes = json.loads(report_file.read_text())["sensors"]["holes"]
    assert len(holes["dropouts"]) == MAX_REPORT_DROPOUTS
    assert holes["dropouts_omitted"] == 20_000 - MAX_REPORT_DROPOUTS
    assert holes["lost"] == 20_000
    assert report_file.stat().st_size < 64 * 1024
    assert "20,000" in done.stdout  # the table counts every dropout
