"""Sensors: a probe (a callable returning a value) plus a period, and a factory by kind.

A sensor only measures: it probes on its schedule, gives the reading its seq, passes it
through the optional noise stage and writes it to the outbox. The network is somebody
else's job (the fleet's sender), so a slow or absent server never delays a probe, and one
sensor never waits on another.

Probes run on the event loop and must return promptly; the built-in ones take
microseconds (the ``system`` probe reads ``/proc`` through psutil without sampling).

A probe with a finite source (a replayed file) ends its sensor by raising
:class:`StopProbing`; a fleet whose sensors have all ended delivers what they stored and
returns.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import psutil
import structlog

from forkwire.protocol import Reading
from forkwire.protocol.messages import SENSOR_PATTERN, Value

#: Takes no argument, returns one value: a number, a list of floats or a JSON object.
Probe = Callable[[], Value]
#: The noise stage between probe and network: True keeps the reading, False drops it.
Noise = Callable[[Reading], bool]
#: A period drawn afresh for every wait (seconds, >= 0), e.g. uniform in [1, 3].
PeriodSource = Callable[[], float]

#: The default period of each kind, in seconds (5 s unless the kind says otherwise).
KIND_PERIODS: Final[dict[str, float]] = {
    "random": 5.0,
    "fast": 1.0,
    "slow": 15.0,
    "sine": 5.0,
    "vector": 5.0,
    "system": 5.0,
}
KINDS: Final[tuple[str, ...]] = tuple(KIND_PERIODS)

#: The ``sine`` kind completes one cycle per minute: slow enough that a 1-5 s period
#: draws a recognisable curve in the plots, fast enough to see one in a short demo.
SINE_CYCLE: Final = 60.0

_NAME: Final = re.compile(SENSOR_PATTERN)

log = structlog.get_logger("forkwire.sensors")


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


def make_sensor(
    kind: str,
    name: str,
    *,
    period: float | None = None,
    noise: Noise | None = None,
    seed: int | None = None,
    dims: int = 3,
) -> Sensor:
    """Build a sensor of a known kind.

    Kinds: ``random`` (an int in [-100, 100], every 5 s), ``fast`` (the same every 1 s),
    ``slow`` (every 15 s), ``sine`` (a float in [-1, 1], one cycle per minute), ``vector``
    (``dims`` normal floats, from numpy), ``system`` (a record ``{"cpu": %, "mem": %,
    "load1": 1-minute load}`` from psutil; a record rather than a vector because the
    three have different units, and the analytics would otherwise take the norm of a
    percentage and a load).

    Args:
        period: overrides the kind's default period.
        seed: makes ``random``/``fast``/``slow``/``vector`` reproducible.
        dims: the length of a ``vector`` reading.

    Raises:
        ValueError: unknown kind, bad name, period or dims.
    """
    if kind not in KIND_PERIODS:
        raise ValueError(f"unknown sensor kind {kind!r}; known: {', '.join(KINDS)}")
    probe: Probe
    if kind in ("random", "fast", "slow"):
        probe = _random_probe(random.Random(seed))
    elif kind == "sine":
        probe = _sine_probe
    elif kind == "vector":
        if dims < 1:
            raise ValueError(f"dims must be >= 1, got {dims}")
        probe = _vector_probe(np.random.default_rng(seed), dims)
    else:
        probe = _system_probe()
    return Sensor(
        name=name,
        probe=probe,
        period=KIND_PERIODS[kind] if period is None else period,
        kind=kind,
        noise=noise,
    )


def _random_probe(rng: random.Random) -> Probe:
    return lambda: rng.randint(-100, 100)


def _sine_probe() -> Value:
    # Wall-clock phase: every sine sensor, in every run, draws the same curve.
    return math.sin(2 * math.pi * (time.time() % SINE_CYCLE) / SINE_CYCLE)


def _vector_probe(rng: np.random.Generator, dims: int) -> Probe:
    def probe() -> Value:
        values: list[float] = rng.normal(size=dims).tolist()
        return values

    return probe


def _system_probe() -> Probe:
    # cpu_percent(None) measures since the previous call and returns a meaningless 0.0 the
    # first time; this call primes it so the first reading is real, and it never sleeps.
    psutil.cpu_percent(interval=None)

    def probe() -> Value:
        return {
            "cpu": psutil.cpu_percent(interval=None),
            "mem": psutil.virtual_memory().percent,
            "load1": psutil.getloadavg()[0],
        }

    return probe
