"""The built-in sensor kinds and the factory that makes a sensor of one.

Each kind is a probe and a default period. The probes take microseconds (the ``system``
probe reads ``/proc`` through psutil without sampling).
"""

from __future__ import annotations

import math
import random
import time
from typing import Final

import numpy as np

from forkwire.client.extras import require
from forkwire.client.sensors.sensor import Noise, Probe, Sensor
from forkwire.protocol.messages import Value

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
        MissingExtra: a ``system`` sensor without psutil (the ``system`` extra).
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
    psutil = require("psutil", "system", "the 'system' sensor kind")
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
