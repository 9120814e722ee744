"""``forkwire demo``: a tiny real run against its own server, and the pure metrics."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from forkwire.client.demo import (
    REFERENCE_LABEL,
    DemoConfig,
    DemoResult,
    _iperf_run,
    attribute_loss,
    count_out_of_order,
    parse_rates,
    percentile,
    render_table,
    rfc3550_jitter,
    run_demo_sync,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RUN_FIELDS = {
    "transport",
    "offered_rate",
    "noise",
    "sent",
    "stored",
    "lost",
    "loss_pct",
    "out_of_order",
    "duplicates",
    "jitter_ms",
    "p50_ms",
    "p99_ms",
    "achieved_rate",
    "kernel_drops",
    "noise_dropped",
    "lost_noise",
    "lost_kernel",
    "lost_elsewhere",
}

#: A short interval, so a 1.5 s noise run is sure to drop at least one reading.
TINY_NOISE = "dropout:0.3-0.5"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, dict[str, Any], Path]:
    """One small demo (500/s and max, 500 readings; a 1.5 s noise pair), its JSON, its db."""
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(
        rates=[500, "max"],
        count=500,
        out_dir=out,
        seed=7,
        noise=TINY_NOISE,
        noise_rate=200,
        noise_seconds=1.5,
        db_path=out / "demo.sqlite",
        iperf=False,
    )
    result = run_demo_sync(config)
    return result, json.loads((out / "demo.json").read_text()), out / "demo.sqlite"


def stored_seqs(db: Path, sensor: str) -> set[int]:
    """The seqs of ``sensor`` in the demo's SQLite file."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute("SELECT seq FROM readings WHERE sensor = ?", (sensor,))
        return {seq for (seq,) in rows}


def test_json_has_every_field_for_every_run(tiny: tuple[DemoResult, dict[str, Any], Path]) -> None:
    """demo.json lists each rate over tcp and udp, then the noise pair, with every field."""
    _result, data, _db = tiny
    runs = data["runs"]
    assert [(run["transport"], run["offered_rate"], run["noise"]) for run in runs] == [
        ("tcp", 500, None),
        ("udp", 500, None),
        ("tcp", "max", None),
        ("udp", "max", None),
        ("tcp", 200, TINY_NOISE),
        ("udp", 200, TINY_NOISE),
    ]
    for run in runs:
        assert run.keys() >= RUN_FIELDS
        assert run["settled"] is True
        assert run["duplicates"] == 0
        assert run["p50_ms"] is not None
        assert run["jitter_ms"] is not None
    assert data["reference"] == []


def test_own_server_asks_4_mib_and_the_notes_say_what_was_granted(
    tiny: tuple[DemoResult, dict[str, Any], Path],
) -> None:
    """The demo's own server asks for a 4 MiB UDP receive buffer; the notes say the size
    (or that the kernel granted less), and the runs carry the CPU they measured."""
    result, data, _db = tiny
    assert data["udp_rcvbuf"] == result.udp_rcvbuf
    assert result.udp_rcvbuf is not None
    (note,) = [note for note in result.notes if note.startswith("server UDP receive buffer")]
    assert "4,096 KiB" in note
    for run in data["runs"]:
        assert "server_cpu" in run
        assert "host_cpu" in run


def test_tcp_loses_nothing(tiny: tuple[DemoResult, dict[str, Any], Path]) -> None:
    """Every TCP run stores every reading it put on the wire: lost is the noise's only."""
    result, _data, db = tiny
    for run in (run for run in result.runs if run.transport == "tcp"):
        assert run.lost == run.noise_dropped
        assert run.lost_kernel == run.lost_elsewhere == 0
        assert run.kernel_drops is None
        assert run.stored == len(stored_seqs(db, run.sensor)) == run.sent - run.noise_dropped


def test_udp_accounting_is_exact(tiny: tuple[DemoResult, dict[str, Any], Path]) -> None:
    """For UDP, sent == stored + lost with stored counted in the db, and every loss is
    attributed to exactly one cause."""
    result, _data, db = tiny
    for run in (run for run in result.runs if run.transport == "udp"):
        assert run.sent == run.stored + run.lost
        assert run.stored == len(stored_seqs(db, run.sensor))
        assert run.lost == run.lost_noise + run.lost_kernel + run.lost_elsewhere
        assert run.kernel_drops is not None
        assert run.loss_pct == pytest.approx(100 * run.lost / run.sent, abs=1e-4)


def test_noise_runs_leave_gaps_at_the_dropped_seqs(
    tiny: tuple[DemoResult, dict[str, Any], Path],
) -> None:
    """Noise drops keep their seqs: the stored stream has gaps exactly there (over TCP),
    and UDP loses at least those."""
    result, _data, db = tiny
    noisy = {run.transport: run for run in result.runs if run.noise is not None}
    for run in noisy.values():
        assert run.noise_dropped == len(run.noise_seqs) >= 1
        assert run.lost_noise == run.noise_dropped
        missing = set(range(run.sent)) - stored_seqs(db, run.sensor)
        assert set(run.noise_seqs) <= missing
    assert noisy["tcp"].lost == noisy["tcp"].noise_dropped
    assert set(range(noisy["tcp"].sent)) - stored_seqs(db, noisy["tcp"].sensor) == set(
        noisy["tcp"].noise_seqs
    )
    assert noisy["udp"].lost >= noisy["udp"].noise_dropped


def test_png_and_table(tiny: tuple[DemoResult, dict[str, Any], Path]) -> None:
    """demo.png is a PNG, and the table has a row per run and says iperf3 was not run."""
    result, _data, _db = tiny
    assert result.png_path is not None
    assert result.png_path.read_bytes()[:8] == PNG_SIGNATURE
    console = Console(width=240, file=io.StringIO())
    console.print(render_table(result))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert sum(line.startswith("tcp") for line in text.splitlines()) == 3
    assert "max" in text
    assert "iperf3 reference not asked for" in text


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not on PATH")
async def test_iperf_reference_row_has_packet_counts() -> None:
    """An iperf3 run over loopback UDP gives a reference row with exact packet counts."""
    iperf = shutil.which("iperf3")
    assert iperf is not None

    row = await _iperf_run(iperf, 1000, 1000 * 100 * 8, 100, 1)

    assert row["error"] is None
    assert row["label"] == REFERENCE_LABEL
    assert row["sent"] > 0
    assert 0 <= row["lost"] <= row["sent"]


def test_jitter_follows_rfc3550_by_hand() -> None:
    """J += (|D| - J) / 16 over consecutive transit differences, starting from 0."""
    # D = +2, -1, +4: J = 2/16 = 0.125; then 0.125 + (1 - 0.125)/16 = 0.1796875;
    # then 0.1796875 + (4 - 0.1796875)/16 = 0.41845703125.
    assert rfc3550_jitter([10.0, 12.0, 11.0, 15.0]) == pytest.approx(0.41845703125)
    assert rfc3550_jitter([5.0, 5.0, 5.0]) == 0.0
    assert rfc3550_jitter([5.0]) is None


@pytest.mark.parametrize(
    ("seqs", "late"),
    [
        ([], 0),
        ([0, 1, 2, 3], 0),
        ([0, 2, 1, 3], 1),
        ([3, 0, 1, 2], 3),
        ([0, 5, 1, 6, 2], 2),
        ([0, 2, 4], 0),
    ],
)
def test_out_of_order_counts_readings_after_a_higher_seq(seqs: list[int], late: int) -> None:
    """A reading is out of order when a higher seq arrived before it; gaps are not."""
    assert count_out_of_order(seqs) == late


def test_percentile_interpolates_like_numpy() -> None:
    """Linear interpolation between closest ranks, numpy's default definition."""
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    values = list(np.random.default_rng(3).exponential(size=101))
    for q in (1, 50, 90, 99):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], 101)


@pytest.mark.parametrize(
    ("lost", "noise", "kernel", "expected"),
    [
        (10, 3, 5, (3, 5, 2)),
        (10, 3, 100, (3, 7, 0)),
        (0, 0, 50, (0, 0, 0)),
        (5, 0, None, (0, 0, 5)),
        (4, 4, 0, (4, 0, 0)),
    ],
)
def test_loss_is_attributed_noise_then_kernel_then_elsewhere(
    lost: int, noise: int, kernel: int | None, expected: tuple[int, int, int]
) -> None:
    """Noise is exact, kernel drops are capped at what is left, the rest is elsewhere."""
    assert attribute_loss(lost, noise, kernel) == expected


def test_parse_rates() -> None:
    """A comma list of readings/s and 'max' parses; anything else is a clear ValueError."""
    assert parse_rates("1000, 2.5e4,MAX") == (1000, 25000, "max")
    with pytest.raises(ValueError, match="bad rate 'fast'"):
        parse_rates("1000,fast")
    with pytest.raises(ValueError, match="no rates"):
        parse_rates(" , ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host": "127.0.0.1"}, "a host needs a port"),
        ({"port": 70000}, "port must be in"),
        ({"rates": []}, "non-empty"),
        ({"rates": [0]}, "positive"),
        ({"rates": ["fast"]}, "bad rate"),
        ({"rates": [1000, 1000.0]}, "must not repeat"),
        ({"count": 0}, "count must be"),
        ({"noise": "bogus:1"}, "bad noise"),
        ({"udp_rcvbuf": 10}, "udp_rcvbuf"),
        ({"port": 7700, "udp_rcvbuf": 65536}, "own server"),
        ({"noise_rate": 0}, "noise_rate"),
    ],
)
def test_bad_config_is_a_value_error(options: dict[str, Any], message: str) -> None:
    """Bad arguments fail at construction with a ValueError that names the problem."""
    with pytest.raises(ValueError, match=message):
        DemoConfig(**options)
