"""The demo's table and picture, drawn from a made-up result with a loss of every cause."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from forkwire.client.demo import REFERENCE_LABEL, DemoResult, Rate, RunResult, render_table
from forkwire.client.demo.table import TITLE, print_table
from forkwire.client.transport import Transport

WIDE_HEADERS = (
    *("transport", "offered/s", "noise", "sent", "stored", "lost", "loss %", "ooo", "dup"),
    *("jitter ms", "p50 ms", "p99 ms", "achieved/s", "kernel drops", "lost to"),
)


def run(
    transport: str,
    rate: Rate,
    sent: int,
    *,
    noise: int = 0,
    kernel: int = 0,
    other: int = 0,
    spec: str | None = None,
    achieved: float | None = None,
) -> RunResult:
    """A run that lost ``noise + kernel + other`` readings, each to its cause."""
    lost = noise + kernel + other
    return RunResult(
        transport=Transport(transport),
        offered_rate=rate,
        noise=spec,
        sensor=f"demo-{transport}-{rate}",
        sent=sent,
        stored=sent - lost,
        lost=lost,
        loss_pct=round(100 * lost / sent, 4),
        out_of_order=3,
        duplicates=0,
        jitter_ms=0.123,
        p50_ms=12.3,
        p99_ms=45.6,
        achieved_rate=achieved if achieved is not None else float(rate if rate != "max" else 0),
        kernel_drops=None if transport == "tcp" else kernel + 17,
        noise_dropped=noise,
        lost_noise=noise,
        lost_kernel=kernel,
        lost_elsewhere=other,
        server_received=None,
        send_seconds=1.0,
        acked_seconds=None,
        settled=True,
    )


def reference(rate: Rate, sent: int, lost: int, error: str | None = None) -> dict[str, Any]:
    """An iperf3 reference row as the demo's iperf module makes one."""
    return {
        "label": REFERENCE_LABEL,
        "tool": "iperf3",
        "transport": "udp",
        "offered_rate": rate,
        "packet_bytes": 134,
        "seconds": 1,
        "sent": None if error else sent,
        "lost": None if error else lost,
        "loss_pct": None if error else round(100 * lost / sent, 4),
        "jitter_ms": None if error else 0.01,
        "achieved_rate": None if error else float(sent),
        "error": error,
    }


def made_up(*, with_reference: bool = True) -> DemoResult:
    """Every default rate over both transports, UDP losing to the kernel and elsewhere from
    20k/s up, a noise pair losing to all three causes, and iperf3 rows (one failed)."""
    runs: list[RunResult] = []
    udp_losses = {1000: (0, 0), 5000: (0, 0), 20_000: (9_162, 312), 50_000: (14_103, 1_250),
                  100_000: (15_004, 2_871), "max": (15_321, 3_001)}  # fmt: skip
    for rate, (kernel, other) in udp_losses.items():
        pace = 1e9 if rate == "max" else float(rate)
        runs.append(run("tcp", rate, 20_000, achieved=min(pace, 38_123.4)))
        runs.append(
            run("udp", rate, 20_000, kernel=kernel, other=other, achieved=min(pace, 43_210.9))
        )
    runs.append(run("tcp", 200, 2_000, noise=4, spec="dropout:2-3"))
    runs.append(run("udp", 200, 2_000, noise=4, kernel=1, other=2, spec="dropout:2-3"))
    rows = [
        reference(1000, 10_000, 0),
        reference(5000, 20_000, 0),
        reference(20_000, 20_000, 12),
        reference(50_000, 50_000, 400),
        reference(100_000, 100_000, 3_100),
        reference("max", 0, 0, error="iperf3 client timed out"),
    ]
    return DemoResult(
        runs=runs,
        reference=rows if with_reference else [],
        notes=[
            "latency = server commit time - client send time (includes the group-commit "
            "wait); kernel drops = host-wide UDP RcvbufErrors growth"
        ],
        json_path=Path("demo.json"),
        png_path=None,
        server="own",
        udp_rcvbuf=212_992,
        datagram_bytes=134,
    )


def rendered(result: DemoResult, width: int, *, wide: bool = False) -> list[str]:
    """The table as printed on a console ``width`` columns wide, line by line."""
    console = Console(width=width, record=True, file=io.StringIO())
    print_table(console, result, wide=wide)
    return [line.rstrip() for line in console.export_text().splitlines()]


def body(lines: list[str]) -> list[str]:
    """The lines between the header rule and the caption: the rows (and a section gap)."""
    rule = next(i for i, line in enumerate(lines) if line.lstrip().startswith("━"))
    end = next(i for i, line in enumerate(lines) if i > rule and line.startswith("offered"))
    return lines[rule + 1 : end]


@pytest.mark.parametrize("with_reference", [True, False])
def test_table_fits_80_columns_one_line_per_row(with_reference: bool) -> None:
    """At 80 columns no line is longer, every run and reference row is one line, and no
    header or number is cut short."""
    result = made_up(with_reference=with_reference)
    lines = rendered(result, 80)

    assert max(len(line) for line in lines) <= 80
    rows = [line for line in body(lines) if line.strip()]
    assert len(rows) == len(result.runs) + len(result.reference)
    assert "…" not in "\n".join(lines)
    header = lines[lines.index(next(line for line in lines if "transport" in line))]
    assert header.split() == ["transport", "offered", "sent", "stored", "loss", "%", "noise",
                              "kernel", "other", "achieved"]  # fmt: skip
    # The cause columns of a run that lost to all three: noise, kernel, other.
    noisy_udp = next(row for row in rows if row.startswith("udp+noise"))
    assert noisy_udp.split() == ["udp+noise", "200", "2,000", "1,993", "0.35", "4", "1", "2",
                                 "200"]  # fmt: skip
    max_udp = next(row for row in rows if row.startswith("udp ") and " max " in row)
    assert max_udp.split() == ["udp", "max", "20,000", "1,678", "91.61", "—", "15,321",
                               "3,001", "43,211"]  # fmt: skip


def test_table_caption_explains_the_narrow_columns() -> None:
    """What the short headers mean, the noise spec and a failed iperf3 run are told below."""
    text = "\n".join(rendered(made_up(), 80))

    assert "--wide" in text
    assert "+noise runs: dropout:2-3" in text
    assert "iperf3 at max/s: iperf3 client timed out" in text
    assert REFERENCE_LABEL in text


def test_wide_table_has_every_column_even_on_a_narrow_console() -> None:
    """--wide: every column, no cell cut short, each row one line, also when the console
    is only 80 columns wide (the terminal folds the long lines, no digit is lost)."""
    result = made_up()
    for width in (80, 250):
        lines = rendered(result, width, wide=True)
        header = next(line for line in lines if "transport" in line)
        for name in WIDE_HEADERS:
            assert name in header
        assert "…" not in "\n".join(lines)
        assert "kernel 15,004, other 2,871" in "\n".join(lines)
        assert "noise 4, kernel 1, other 2" in "\n".join(lines)
        rule = next(i for i, line in enumerate(lines) if line.lstrip().startswith("━"))
        rows = [line for line in lines[rule + 1 :] if line.startswith("  ") and line.strip()]
        assert len(rows) == len(result.runs) + len(result.reference)


def test_render_table_is_narrow_unless_asked() -> None:
    """render_table alone (a library caller's) is the 80-column table by default."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render_table(made_up()))
    narrow = console.export_text()
    console.print(render_table(made_up(), wide=True))
    wide = console.export_text()

    assert TITLE in narrow
    assert "jitter ms" not in narrow
    assert TITLE in wide
    assert "jitter ms" in wide
