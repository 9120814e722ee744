"""SQLite hands a report its streams as columns: the same report as from rows, faster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fwtest import postgres_schema

from forkwire.server.report import build_report, build_report_of_streams
from forkwire.server.storage import Entry, open_repository
from forkwire.server.storage.base import ColumnStore, decode_values

ENTRIES = [
    *(Entry("m", p, q, float(q), str(q)) for p in ("", "b", "a") for q in (0, 2, 5)),
    Entry("n", "", 0, 1.0, '{"x":1}'),
    Entry("n", "", 3, 2.0, '{"x":2}'),
    Entry("v", "", 0, 1.0, "[1.0,2.0]"),
    Entry("v", "", 4, 3.0, "[3.0,4.0]"),
    Entry("big", "", 0, -1.7e308, "1" * 400),
    Entry("big", "", 1, 2.0, "1.7e308"),
    Entry("big", "", 2, 3.0, "-1.7e308"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'c.sqlite'}"
    else:
        async with postgres_schema() as url:
            yield url


@pytest.mark.parametrize(
    ("sensors", "since"), [(None, None), (["m", "big"], None), (None, 1.5), (["nope"], None)]
)
async def test_columns_give_the_report_rows_give(
    store_url: str, sensors: list[str] | None, since: float | None
) -> None:
    repo = await open_repository(store_url)
    try:
        await repo.add_many(ENTRIES, 1.0)
        assert isinstance(repo, ColumnStore)
        columns, omitted = await repo.stream_columns(sensors, since, max_sensors=1000)
        from_rows = build_report(await repo.query(sensors, since), now=0.0)
    finally:
        await repo.close()
    assert build_report_of_streams(columns, now=0.0, sensors_omitted=omitted) == from_rows


async def test_columns_stop_at_max_sensors_and_count_the_rest(store_url: str) -> None:
    repo = await open_repository(store_url)
    try:
        await repo.add_many(ENTRIES, 1.0)
        assert isinstance(repo, ColumnStore)
        columns, omitted = await repo.stream_columns(None, None, max_sensors=2)
    finally:
        await repo.close()
    assert sorted({c.sensor for c in columns}) == ["big", "m"]
    assert omitted == 2


def test_decode_values_survives_broken_texts_in_any_slice() -> None:
    texts = ["1"] * 10_000 + ["{broken", None, "[1,2]"] + ["2.5"] * 10_000
    values = decode_values(texts)
    assert len(values) == len(texts)
    assert values[10_000:10_003] == [None, None, [1, 2]]
    assert values[0] == 1
    assert values[-1] == 2.5
