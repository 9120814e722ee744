"""A fleet's counters: per sensor, for the whole fleet, and as a rich table."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.table import Table


@dataclass(frozen=True, slots=True)
class SensorStats:
    """One sensor's counters.

    ``sent`` counts readings written to the wire, resends included; ``acked`` counts
    readings removed from the outbox by an ack, each once; ``pending`` is what the outbox
    still holds; ``probed`` is seqs consumed, including readings dropped by noise.
    """

    name: str
    kind: str
    probed: int = 0
    sent: int = 0
    acked: int = 0
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


def render_status(summary: FleetSummary) -> Table:
    """A table of the fleet: one row per sensor, a totals footer, the link in the title."""
    link = "connected" if summary.connected else "server away"
    link = link if summary.running else "stopped"
    table = Table(
        title=(
            f"forkwire sensors → {summary.server} ({link}) · in flight "
            f"{summary.in_flight}/{summary.slots} (max {summary.max_in_flight}) · "
            f"reconnects {summary.reconnects} · failed connects {summary.failed_connects} · "
            f"{summary.elapsed:.0f} s"
        ),
        show_footer=True,
    )
    columns = ("probed", "sent", "acked", "pending", "noise drops", "outbox drops")
    table.add_column("sensor", footer="total")
    table.add_column("kind")
    totals = [
        sum(s.probed for s in summary.sensors),
        summary.sent,
        summary.acked,
        summary.pending,
        sum(s.dropped_by_noise for s in summary.sensors),
        sum(s.dropped_by_outbox for s in summary.sensors),
    ]
    for name, total in zip(columns, totals, strict=True):
        table.add_column(name, footer=f"{total:,}", justify="right")
    for s in summary.sensors:
        values = (s.probed, s.sent, s.acked, s.pending, s.dropped_by_noise, s.dropped_by_outbox)
        table.add_row(s.name, s.kind, *(f"{v:,}" for v in values))
    return table
