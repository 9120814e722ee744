"""The demo's table and picture, drawn from a made-up result with a loss of every cause."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from forkwire.client.demo import REFERENCE_LABEL, DemoResult, Rate, RunResult, render_table
from forkwire.client.demo.plot import PARTS
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


def bar_parts(result: DemoResult) -> dict[tuple[str, str, str], float]:
    """The height of every bar part of demo.png's left panel, by (transport, group, part)."""
    from forkwire.client.demo.plot import demo_figure

    parts: dict[tuple[str, str, str], float] = {}
    for patch in demo_figure(result).axes[0].patches:
        gid = patch.get_gid()
        if gid:
            transport, group, part = gid.split("|")
            parts[transport, group, part] = patch.get_height()  # type: ignore[attr-defined]
    return parts


def test_picture_splits_every_bar_into_stored_and_lost_by_cause() -> None:
    """Per rate and transport a bar of 100 % of the readings sent: the losses by cause and
    what was stored, each its own part; the noise runs are a pair of their own."""
    pytest.importorskip("matplotlib")
    result = made_up()
    parts = bar_parts(result)

    noise, kernel, other, stored = (label for label, _colour in PARTS)
    assert parts["udp", "20k/s", kernel] == pytest.approx(100 * 9_162 / 20_000)
    assert parts["udp", "20k/s", other] == pytest.approx(100 * 312 / 20_000)
    assert parts["udp", "20k/s", stored] == pytest.approx(100 * (20_000 - 9_474) / 20_000)
    assert parts["tcp", "20k/s", stored] == pytest.approx(100)
    assert ("tcp", "20k/s", kernel) not in parts  # nothing lost, no part drawn
    noisy = "200/s\n+ noise dropout:2-3"
    assert parts["udp", noisy, noise] == pytest.approx(100 * 4 / 2_000)
    assert parts["udp", noisy, kernel] == pytest.approx(100 * 1 / 2_000)
    assert parts["udp", noisy, other] == pytest.approx(100 * 2 / 2_000)
    assert parts["tcp", noisy, noise] == pytest.approx(100 * 4 / 2_000)
    for transport in ("tcp", "udp"):
        for group in ("1k/s", "5k/s", "20k/s", "50k/s", "100k/s", "max", noisy):
            total = sum(v for (t, g, _), v in parts.items() if (t, g) == (transport, group))
            assert total == pytest.approx(100)


def test_picture_marks_iperf3_loss_and_has_a_legend_for_every_part() -> None:
    """iperf3's loss is a marker at its loss % on each UDP bar it has a row for (not for a
    failed run), and the legend names every part and the marker."""
    pytest.importorskip("matplotlib")
    from forkwire.client.demo.plot import demo_figure

    figure = demo_figure(made_up())
    bars = figure.axes[0]
    markers = {line.get_gid(): line.get_ydata() for line in bars.lines if line.get_gid()}

    assert set(markers) == {f"iperf3|{rate}" for rate in (1000, 5000, 20_000, 50_000, 100_000)}
    assert list(markers["iperf3|100000"]) == [pytest.approx(3.1)]
    assert list(markers["iperf3|20000"]) == [pytest.approx(0.06)]
    legend = bars.get_legend()
    assert legend is not None
    labels = [text.get_text() for text in legend.get_texts()]
    assert {label for label, _colour in PARTS} <= set(labels)
    assert f"iperf3 UDP loss ({REFERENCE_LABEL})" in labels
    annotations = [text.get_text() for text in bars.texts]
    assert "47.4%" in annotations  # UDP at 20k/s: 9,474 of 20,000
    assert "iperf3 3.1%" in annotations

    without = demo_figure(made_up(with_reference=False)).axes[0]
    assert not [line for line in without.lines if line.get_gid()]
    without_legend = without.get_legend()
    assert without_legend is not None
    assert all("iperf3" not in text.get_text() for text in without_legend.get_texts())


def test_picture_is_a_png(tmp_path: Path) -> None:
    """plot_demo writes a PNG, also for a result without runs (nothing to draw is no crash)."""
    pytest.importorskip("matplotlib")
    from forkwire.client.demo import plot_demo

    for name, result in (("full.png", made_up()), ("empty.png", replace(made_up(), runs=[]))):
        plot_demo(result, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_picture_says_the_receive_buffer_size() -> None:
    """The kernel's receive buffer is a cause of loss; its granted size is in the title."""
    pytest.importorskip("matplotlib")
    from forkwire.client.demo.plot import demo_figure

    assert "208 KiB" in demo_figure(made_up()).axes[0].get_title()
    assert "KiB" not in demo_figure(replace(made_up(), udp_rcvbuf=None)).axes[0].get_title()
