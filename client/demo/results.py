"""What the demo found: one :class:`RunResult` per run, all of them in a :class:`DemoResult`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwire.client.demo.metrics import Rate
from forkwire.client.transport import Transport


@dataclass
class RunResult:
    """One sender's run over one transport: what it sent and what the server stored."""

    transport: Transport
    offered_rate: Rate
    #: The noise spec of a noise run, None for a clean run.
    noise: str | None
    sensor: str
    #: Seqs the sender issued, including those the noise stage dropped before the wire.
    sent: int
    stored: int
    lost: int
    loss_pct: float
    out_of_order: int | None
    duplicates: int | None
    jitter_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    achieved_rate: float | None
    #: UDP only: growth of the host-wide kernel ``RcvbufErrors`` during the run.
    kernel_drops: int | None
    noise_dropped: int
    lost_noise: int
    lost_kernel: int
    lost_elsewhere: int
    #: Readings the server process parsed during the run (its ``readings_received``).
    server_received: int | None
    #: From the first send to the last handed to the transport (achieved_rate's divisor).
    send_seconds: float
    #: TCP: from the first send to the last ack (None for UDP, which has no acks).
    acked_seconds: float | None
    #: False when the server's counters still moved at ``settle_timeout``.
    settled: bool
    #: The seqs the noise stage dropped (they are the gaps a consumer sees).
    noise_seqs: list[int] = field(default_factory=list)
    #: The own server's CPU during the run, in cores (1.0: one core busy); None unknown.
    server_cpu: float | None = None
    #: The share of this machine's CPUs busy during the run (0..1); None unknown.
    host_cpu: float | None = None


@dataclass
class DemoResult:
    """All runs, the iperf3 reference, and where the files went."""

    runs: list[RunResult]
    #: iperf3 over loopback UDP at the same packet rates and sizes; [] without iperf3.
    reference: list[dict[str, Any]]
    notes: list[str]
    json_path: Path
    #: None when it was not drawn (no matplotlib: the notes say so).
    png_path: Path | None
    #: ``"own"`` (a subprocess with SQLite) or ``"host:port"``.
    server: str
    #: SO_RCVBUF of the server's UDP socket as granted by the kernel, when it says.
    udp_rcvbuf: int | None
    datagram_bytes: int

    def to_json(self) -> dict[str, Any]:
        """The content of ``demo.json``."""
        return {
            "runs": [dataclasses.asdict(run) for run in self.runs],
            "reference": self.reference,
            "notes": self.notes,
            "server": self.server,
            "udp_rcvbuf": self.udp_rcvbuf,
            "datagram_bytes": self.datagram_bytes,
        }
