"""The fleet's status table."""

from __future__ import annotations

import io

from rich.console import Console

from forkwire.client.sensors.status import FleetSummary, SensorStats, render_status


def test_render_status_lists_every_sensor() -> None:
    """The status table has a row per sensor with sent/acked/pending, and the link state."""
    summary = FleetSummary(
        server="127.0.0.1:7700",
        connected=False,
        slots=5,
        in_flight=0,
        max_in_flight=5,
        reconnects=2,
        failed_connects=3,
        elapsed=12.0,
        sensors=(
            SensorStats("sensor-0", "fast", probed=12, sent=11, acked=10, pending=2),
            SensorStats("sensor-1", "slow", probed=1, sent=1, acked=1, pending=0),
        ),
    )
    console = Console(file=io.StringIO(), width=160)
    console.print(render_status(summary))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "server away" in text
    assert "sensor-0" in text
    assert "sensor-1" in text
    assert "11" in text
    assert "10" in text
