"""A fleet's counters: per sensor, for the whole fleet, and as a rich table."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table


@dataclass(frozen=True, slots=True)
class SensorStats:
    """One sensor's counters.

    ``probed`` is seqs this run consumed, including readings dropped by noise; ``sent``
    counts readings written to the wire, resends included; ``acked`` counts readings
    removed from the outbox by an ack, each once, of which ``acked_backlog`` were an
    earlier run's; ``conflicts`` were refused by the server (their key is stored with
    another value) and dropped; ``pending`` is what the outbox still holds.
    """

    name: str
    kind: str
    probed: int = 0
    sent: int = 0
    acked: int = 0
    acked_backlog: int = 0
    conflicts: int = 0
    pending: int = 0
    dropped_by_noise: int = 0
    dropped_by_outbox: int = 0


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """A snapshot of a fleet: the live status while it runs, the summary when it ends."""

    server: str
    connected: bool
    slots: int
    in_flight: int
    max_in_flight: int
    reconnects: int
    failed_connects: int
    elapsed: float
    #: The outbox's producer id, and the readings an earlier run had left in it.
    producer: str = ""
    backlog: int = 0
    #: Time from a reading's probe to its ack, of recent readings (None before the first).
    ack_p50_ms: float | None = None
    ack_p99_ms: float | None = None
    #: False in the summary of a run that has ended.
    running: bool = True
    sensors: tuple[SensorStats, ...] = field(default_factory=tuple)

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.sensors)

    @property
    def acked(self) -> int:
        return sum(s.acked for s in self.sensors)

    @property
    def pending(self) -> int:
        return sum(s.pending for s in self.sensors)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data, totals included."""
        data = dataclasses.asdict(self)
        data.update(
            sent=self.sent,
            acked=self.acked,
            pending=self.pending,
            acked_backlog=self.acked_backlog,
            conflicts=self.conflicts,
        )
        return data

    @property
    def acked_backlog(self) -> int:
        return sum(s.acked_backlog for s in self.sensors)

    @property
    def conflicts(self) -> int:
        return sum(s.conflicts for s in self.sensors)


def render_status(summary: FleetSummary) -> Table:
    """A table of the fleet: one row per sensor, a totals footer, the link in the title."""
    link = "connected" if summary.connected else "server away"
    link = link if summary.running else "stopped"
    latency = (
        f" · ack p50 {summary.ack_p50_ms:.1f} ms, p99 {summary.ack_p99_ms:.1f} ms"
        if summary.ack_p50_ms is not None and summary.ack_p99_ms is not None
        else ""
    )
    table = Table(
        title=(
            f"forkwire sensors → {summary.server} ({link}) · frames in flight "
            f"{summary.in_flight}/{summary.slots} (max {summary.max_in_flight}) · "
            f"reconnects {summary.reconnects} · failed connects {summary.failed_connects} · "
            f"{summary.elapsed:.0f} s{latency}"
        ),
        caption=f"producer {summary.producer or '(anonymous)'}"
        + (f" · {summary.backlog:,} readings left by an earlier run" if summary.backlog else ""),
        show_footer=True,
    )
    columns = (
        "probed",
        "sent",
        "acked",
        "of which backlog",
        "conflicts",
        "pending",
        "noise drops",
        "outbox drops",
    )
    table.add_column("sensor", footer="total")
    table.add_column("kind")
    rows = [
        (
            s.probed,
            s.sent,
            s.acked,
            s.acked_backlog,
            s.conflicts,
            s.pending,
            s.dropped_by_noise,
            s.dropped_by_outbox,
        )
        for s in summary.sensors
    ]
    totals = [sum(column) for column in zip(*rows, strict=True)] if rows else [0] * len(columns)
    for name, total in zip(columns, totals, strict=True):
        table.add_column(name, footer=f"{total:,}", justify="right")
    for s, values in zip(summary.sensors, rows, strict=True):
        table.add_row(s.name, s.kind, *(f"{v:,}" for v in values))
    return table
