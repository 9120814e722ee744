"""What a sensor fleet runs and where: :class:`FleetConfig`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from forkwire.client.connection import DEFAULT_HOST
from forkwire.client.sensors import DEFAULT_BATCH
from forkwire.client.sensors.kinds import KINDS
from forkwire.client.sensors.outbox import DEFAULT_MAX_ROWS, OutboxPolicy
from forkwire.client.transport import Transport
from forkwire.protocol import DEFAULT_PORT

if TYPE_CHECKING:
    from forkwire.client.sensors.sensor import Noise, Sensor
    from forkwire.client.sensors.status import FleetSummary


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What to run and where.

    Args:
        host, port: the forkwire server.
        count: sensors to run; their kinds cycle through ``kinds``.
        kinds: sensor kinds (see :func:`forkwire.client.sensors.kinds.make_sensor`).
        period: overrides every kind's period, in seconds.
        duration: seconds to run; None runs until cancelled or ``stop`` is set.
        slots: frames in flight (sent, not yet acked) across the whole fleet.
        outbox: the SQLite outbox file; reuse it to resume seqs and unsent readings.
        outbox_max, outbox_policy: the outbox bound and what happens when it is reached.
        batch: the most readings per ``readings`` frame: a frame takes what is waiting in
            the outbox, up to this. 1 is MQTT's shape (a message per reading); the default
            moves a backlog in a few round trips. Over UDP a frame also fits one datagram.
        prefix: sensor names are ``{prefix}-{i}``.
        on_status: called with a :class:`FleetSummary` every ``status_interval`` seconds,
            whenever the link connects, is lost or fails to connect, and once at the end
            (for a live table).
        drain_timeout: on stop, how long to wait for the acks of readings in flight.
        ack_timeout: a connection with readings in flight and no ack for this long is
            considered dead (a server that hangs instead of closing).
        backoff_initial, backoff_max: reconnect delays in seconds (see
            :class:`forkwire.client.backoff.Backoff`).
        connect_timeout: a fleet that has never reached the server gives up after this many
            seconds of failed attempts (ConnectError); None keeps trying (``--wait``). Once
            connected, a lost server is always waited for.
        noise: builds the noise stage of each sensor (None: keep every reading).
        transport: ``tcp``, or ``udp``: one ``readings`` frame per datagram.
        udp_ack: over UDP, ask for acks and resend from the outbox like TCP (after
            ``udp_ack_timeout`` of silence); without it readings are fire-and-forget: a
            slot is held only for the send and the row leaves the outbox once sent.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    count: int = 5
    kinds: Sequence[str] = ("random",)
    period: float | None = None
    duration: float | None = None
    slots: int = 5
    outbox: str | Path = "forkwire-outbox.sqlite"
    outbox_max: int = DEFAULT_MAX_ROWS
    outbox_policy: OutboxPolicy = "block"
    batch: int = DEFAULT_BATCH
    prefix: str = "sensor"
    on_status: Callable[[FleetSummary], None] | None = None
    status_interval: float = 1.0
    drain_timeout: float = 5.0
    ack_timeout: float = 30.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    connect_timeout: float | None = 10.0
    noise: Callable[[Sensor], Noise | None] | None = None
    transport: Transport = Transport.tcp
    udp_ack: bool = False
    #: Over UDP with acks, a datagram lost either way shows as silence: resend after this.
    udp_ack_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not self.kinds:
            raise ValueError("kinds must name at least one sensor kind")
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown:
            raise ValueError(f"unknown sensor kinds {unknown}; known: {', '.join(KINDS)}")
        if self.duration is not None and self.duration < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration}")
        # A plain "udp" is accepted and becomes the enum member the fleet compares with.
        object.__setattr__(self, "transport", Transport(self.transport))
