"""The demo's verdict on UDP: within 2x of iperf3's loss, or the resource that ran out."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from test_demo_output import reference, run

from forkwire.client.demo.fidelity import (
    CpuSample,
    cpu_sample,
    cpu_shares,
    rcvbuf_note,
    read_rmem_max,
    verdicts,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_within_twice_iperf3s_loss_is_said_so() -> None:
    runs = [
        run("tcp", 20_000, 20_000),
        run("udp", 20_000, 20_000, kernel=100),  # 0.5 % against iperf3's 0.3 %: within
        run("udp", 1000, 20_000, kernel=10),  # 0.05 % against 0 %: within the slack
    ]
    rows = [reference(20_000, 20_000, 60), reference(1000, 10_000, 0)]
    assert verdicts(runs, rows, 8 << 20) == [
        "UDP 20,000/s: loss 0.50 % vs iperf3 0.30 %: within 2x",
        "UDP 1,000/s: loss 0.05 % vs iperf3 0.00 %: within 2x",
    ]


def test_over_twice_names_the_receive_buffer_and_the_busy_machine() -> None:
    lossy = replace(run("udp", 20_000, 20_000, kernel=1_600), host_cpu=1.0, server_cpu=0.25)
    (line,) = verdicts([lossy], [reference(20_000, 20_000, 0)], 8 << 20)
    assert line == (
        "UDP 20,000/s: loss 8.00 % vs iperf3 0.00 %: over 2x; limit: the server's UDP "
        "receive buffer (8,192 KiB) overflowed: the machine's CPUs were 100% busy"
    )


def test_over_twice_names_the_servers_core_or_a_pause() -> None:
    busy = replace(run("udp", 20_000, 20_000, kernel=1_600), host_cpu=0.6, server_cpu=0.97)
    paused = replace(busy, server_cpu=0.3)
    row = [reference(20_000, 20_000, 0)]
    assert verdicts([busy], row, None)[0].endswith("the server used a whole core (97%)")
    assert verdicts([paused], row, None)[0].endswith(
        "the server paused at 30% of a core (scheduling, storage)"
    )


def test_a_slow_sender_is_said_beside_the_cause_of_the_loss() -> None:
    slow = replace(run("udp", 50_000, 20_000, kernel=4_000, achieved=24_000.0), host_cpu=1.0)
    fine = run("udp", 50_000, 20_000, achieved=24_000.0)
    row = [reference(50_000, 50_000, 0)]
    assert verdicts([slow], row, None)[0].endswith(
        "over 2x; limit: the server's UDP receive buffer overflowed: the machine's CPUs "
        "were 100% busy; and the sender (client CPU) kept only 24,000/s"
    )
    assert verdicts([fine], row, None)[0].endswith(
        "within 2x, but the sender (client CPU) kept only 24,000/s"
    )


def test_rates_past_the_goal_noise_runs_and_tcp_get_no_verdict() -> None:
    runs = [
        run("udp", 100_000, 20_000),
        run("udp", "max", 20_000),
        run("udp", 200, 2_000, noise=4, spec="dropout:2-3"),
        run("tcp", 1000, 20_000),
        run("udp", 5000, 20_000),
    ]
    assert verdicts(runs, [reference(100_000, 100_000, 0)], None) == [
        "UDP 5,000/s: loss 0.00 %, no iperf3 reference to compare with"
    ]


def test_a_failed_iperf3_row_is_no_reference() -> None:
    rows = [reference(1000, 0, 0, error="iperf3 client timed out")]
    assert verdicts([run("udp", 1000, 20_000)], rows, None) == [
        "UDP 1,000/s: loss 0.00 %, no iperf3 reference to compare with"
    ]


def test_the_rcvbuf_note_says_when_the_kernel_granted_less() -> None:
    doubled = 2 if sys.platform.startswith("linux") else 1
    asked = 4 << 20
    assert rcvbuf_note(asked, asked * doubled, 4 << 20) == (
        f"server UDP receive buffer: {asked * doubled // 1024:,} KiB (asked 4,096 KiB)"
    )
    assert rcvbuf_note(asked, 425_984, 212_992) == (
        "server UDP receive buffer: asked 4,096 KiB, the kernel granted only 416 KiB "
        "(net.core.rmem_max = 212,992); as root: sysctl -w net.core.rmem_max=4194304"
    )
    assert rcvbuf_note(None, 425_984, None) == "server UDP receive buffer: 416 KiB"
    assert rcvbuf_note(asked, None, None) is None


def test_rmem_max_is_read_or_none(tmp_path: Path) -> None:
    (tmp_path / "rmem_max").write_text("4194304\n")
    assert read_rmem_max(tmp_path / "rmem_max") == 4_194_304
    assert read_rmem_max(tmp_path / "missing") is None


@linux_only
def test_cpu_is_read_from_proc(tmp_path: Path) -> None:
    """A process's utime + stime and the machine's busy share, from /proc's formats."""
    tick = os.sysconf("SC_CLK_TCK")
    (tmp_path / "42").mkdir()
    fields = ["S", *["0"] * 10, str(3 * tick), str(1 * tick), *["0"] * 30]
    (tmp_path / "42" / "stat").write_text(f"42 (a (b) c) {' '.join(fields)}\n")
    (tmp_path / "stat").write_text(f"cpu  {6 * tick} 0 {2 * tick} {2 * tick} 0 0 0 0 0 0\n")
    sample = cpu_sample(42, tmp_path)
    assert sample == CpuSample(process=4.0, busy=8.0, total=10.0)
    later = CpuSample(process=5.0, busy=16.0, total=20.0)
    assert cpu_shares(sample, later, 2.0) == (0.5, 0.8)
    assert cpu_sample(43, tmp_path).process is None
    assert cpu_shares(CpuSample(None, None, None), later, 2.0) == (None, None)
