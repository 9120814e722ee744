"""``python -m bench.stress`` runs every attack and prints its table (a smoke test: what
the table says is a measurement of this machine and is not checked)."""

from __future__ import annotations

import subprocess
import sys

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


def test_stress_quick_prints_one_row_per_attack() -> None:
    tiny = ["--seconds", "0.5", "--baseline", "0.3", "--connections", "10"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.stress", "--quick", *tiny, "--report-readings", "1000"],
        capture_output=True,
        text=True,
        timeout=110,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("command: python -m bench.stress --quick")
    assert "RSS bound +256 MiB" in out
    header = next(line for line in out.splitlines() if "attack" in line and "verdict" in line)
    assert "held" in header
    assert "p99" in header
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == list(ATTACKS)
    for row in rows:
        assert ("OK" in row) != ("FAIL" in row), row
