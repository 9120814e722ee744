"""A sensor: a probe (a callable returning a value) plus a period.

A sensor only measures: it probes on its schedule, gives the reading its seq, passes it
through the optional noise stage and writes it to the outbox. The network is somebody
else's job (the fleet's sender), so a slow or absent server never delays a probe, and one
sensor never waits on another.

Probes run on the event loop and must return promptly; the built-in ones
(:mod:`forkwire.client.sensors.kinds`) take microseconds.

A probe with a finite source (a replayed file) ends its sensor by raising
:class:`StopProbing`; a fleet whose sensors have all ended delivers what they stored and
returns.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from forkwire.client.logs import get_logger
from forkwire.protocol import Reading
from forkwire.protocol.messages import SENSOR_PATTERN, Value

#: Takes no argument, returns one value: a number, a list of floats or a JSON object.
Probe = Callable[[], Value]
#: The noise stage between probe and network: True keeps the reading, False drops it.
Noise = Callable[[Reading], bool]
#: A period drawn afresh for every wait (seconds, >= 0), e.g. uniform in [1, 3].
PeriodSource = Callable[[], float]

_NAME: Final = re.compile(SENSOR_PATTERN)

log = get_logger("forkwire.sensors")


class StopProbing(Exception):
    """Raised by a probe that has nothing more to measure: its sensor ends normally.

    Like ``StopIteration`` for an iterator, this is how a finite source says it is
    exhausted, not a failure: no seq is consumed and nothing is logged.
    """


class ReadingSink(Protocol):
    """Where a sensor's readings go: the outbox, or a stand-in in tests."""

    def next_seq(self, sensor: str) -> int: ...

    async def put(self, reading: Reading) -> bool: ...


@dataclass(eq=False)
class Sensor:
    """One probe on one schedule.

    Args:
        name: the stream's name on the wire (``[A-Za-z0-9_.-]{1,64}``).
        probe: returns the current value.
        period: seconds between probes, or a callable drawing each wait afresh (it may
            return 0: the next probe then follows as soon as the event loop allows).
        kind: what made it, for the status table.
        noise: an optional stage that may drop a reading before the outbox; a dropped
            reading still consumes its seq, so the consumer sees the gap.
    """

    name: str
    probe: Probe
    period: float | PeriodSource
    kind: str = "custom"
    noise: Noise | None = None
    #: The first probe waits this fraction of the period (a fleet spreads its sensors).
    phase: float = 0.0
    #: Seqs consumed (readings probed, kept or not), readings the noise stage dropped,
    #: and probes that raised (those consume no seq: nothing was measured).
    probed: int = 0
    dropped_by_noise: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"sensor name must match {SENSOR_PATTERN}, got {self.name!r}")
        if not callable(self.period) and not self.period > 0:
            raise ValueError(f"period must be > 0, got {self.period}")
        if not 0 <= self.phase < 1:
            raise ValueError(f"phase must be in [0, 1), got {self.phase}")

    def measure(self, sink: ReadingSink) -> Reading | None:
        """Probe once and return the reading to store, or None if there is none.

        Raises:
            StopProbing: the probe has nothing more to measure.
            Exception: whatever the probe raised; no seq is consumed then.
        """
        value = self.probe()
        ts = time.time()
        reading = Reading(sensor=self.name, seq=sink.next_seq(self.name), ts=ts, value=value)
        self.probed += 1
        if self.noise is not None and not self.noise(reading):
            self.dropped_by_noise += 1
            return None
        return reading

    async def run(
        self, sink: ReadingSink, on_stored: Callable[[Reading], None] | None = None
    ) -> None:
        """Probe every ``period`` seconds until cancelled or the probe raises
        :class:`StopProbing`, storing each kept reading.

        The schedule is fixed-rate from the start. When the sensor falls behind (a
        ``block`` outbox that is full), missed ticks are skipped rather than probed in a
        burst: a burst of readings taken at the same instant measures nothing new.
        """
        loop = asyncio.get_running_loop()
        if self.phase and not callable(self.period):
            # Sensors of one fleet share a period; started together they would probe in
            # lockstep and queue a burst at every tick. Each starts its schedule later.
            await asyncio.sleep(self.phase * self.period)
        due = loop.time()
        while True:
            try:
                reading = self.measure(sink)
            except StopProbing:
                return
            except Exception:
                self.failed += 1
                log.warning("probe failed", sensor=self.name, exc_info=True)
                reading = None
            if reading is not None:
                stored = await sink.put(reading)
                if stored and on_stored is not None:
                    on_stored(reading)
            due += self.period() if callable(self.period) else self.period
            now = loop.time()
            if due < now:
                due = now
            # A schedule, not synchronisation: this is the sensor's clock.
            await asyncio.sleep(due - now)
