"""``python -m bench.stress`` runs every attack and prints its table (a smoke test: what
the table says is a measurement of this machine and is not checked)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from fwtest import REPO

ATTACKS = (
    "never-reads",
    "partial-frames",
    "idle",
    "udp-calc-flood",
    "udp-report-flood",
    "pipeline-hog",
    "big-report",
)


# About 30 s alone; the margin is for a machine busy with other work.
@pytest.mark.timeout(240)
def test_stress_quick_prints_one_row_per_attack() -> None:
    tiny = ["--seconds", "0.5", "--baseline", "0.3", "--connections", "10"]
    args = [sys.executable, "-m", "bench.stress", "--quick", *tiny, "--report-readings", "1000"]
    # A session of its own: if it hangs, its servers and its normal client go with it.
    with subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=200)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"bench.stress --quick did not finish in 200 s:\n{out}")
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert out.startswith("command: python -m bench.stress --quick")
    assert "RSS bound +256 MiB" in out
    header = next(line for line in out.splitlines() if "attack" in line and "verdict" in line)
    assert "held" in header
    assert "p99" in header
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == list(ATTACKS)
    for row in rows:
        assert ("OK" in row) != ("FAIL" in row), row
