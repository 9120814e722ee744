"""Sensors: kinds and periods, the noise hook, and independence from one another."""

from __future__ import annotations

import asyncio
import math

import pytest

from forkwire.client.sensors.kinds import KIND_PERIODS, KINDS, make_sensor
from forkwire.client.sensors.sensor import Sensor
from forkwire.protocol import Reading


class Sink:
    """An in-memory stand-in for the outbox; ``hold`` makes one sensor's put hang."""

    def __init__(self, hold: str | None = None) -> None:
        self.hold = hold
        self.seqs: dict[str, int] = {}
        self.readings: list[Reading] = []
        self.changed = asyncio.Event()

    def next_seq(self, sensor: str) -> int:
        seq = self.seqs.get(sensor, -1) + 1
        self.seqs[sensor] = seq
        return seq

    async def put(self, reading: Reading) -> bool:
        if reading.sensor == self.hold:
            await asyncio.Event().wait()  # a send that never completes
        self.readings.append(reading)
        self.changed.set()
        return True

    async def wait_for_count(self, sensor: str, count: int) -> None:
        async with asyncio.timeout(5.0):
            while sum(r.sensor == sensor for r in self.readings) < count:
                self.changed.clear()
                await self.changed.wait()


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_makes_a_valid_reading(kind: str) -> None:
    """Each kind's probe yields a value the wire accepts, with the kind's default period."""
    sensor = make_sensor(kind, f"s-{kind}", seed=1)
    reading = sensor.measure(Sink())
    assert reading is not None
    assert reading.seq == 0
    assert sensor.period == KIND_PERIODS[kind]


def test_kind_values() -> None:
    """random: int in [-100, 100]; sine: float in [-1, 1]; vector: dims floats; system: record."""
    sink = Sink()
    values = [make_sensor("random", "r", seed=s).probe() for s in range(50)]
    assert all(isinstance(v, int) and -100 <= v <= 100 for v in values)
    sine = make_sensor("sine", "s").probe()
    assert isinstance(sine, float)
    assert -1.0 <= sine <= 1.0
    vector = make_sensor("vector", "v", dims=4, seed=0).probe()
    assert isinstance(vector, list)
    assert len(vector) == 4
    assert all(isinstance(x, float) and math.isfinite(x) for x in vector)
    record = make_sensor("system", "sys").measure(sink)
    assert record is not None
    assert isinstance(record.value, dict)
    assert set(record.value) == {"cpu", "mem", "load1"}


def test_default_periods_and_override() -> None:
    """random is 5 s, fast 1 s, slow 15 s; period= overrides any kind."""
    assert make_sensor("random", "a").period == 5.0
    assert make_sensor("fast", "b").period == 1.0
    assert make_sensor("slow", "c").period == 15.0
    assert make_sensor("slow", "d", period=0.5).period == 0.5


def test_factory_refuses_bad_input() -> None:
    """Unknown kinds, names the wire refuses and non-positive periods are ValueErrors."""
    with pytest.raises(ValueError, match="unknown sensor kind"):
        make_sensor("thermometer", "a")
    with pytest.raises(ValueError, match="sensor name"):
        make_sensor("random", "has space")
    with pytest.raises(ValueError, match="period"):
        make_sensor("random", "a", period=0)


def test_noise_drop_consumes_the_seq() -> None:
    """A reading dropped by noise uses up its seq and is counted, so the consumer sees a gap."""
    sink = Sink()
    sensor = Sensor("a", lambda: 1, 1.0, noise=lambda r: r.seq % 2 == 0)
    kept = [sensor.measure(sink) for _ in range(5)]
    assert [r.seq if r else None for r in kept] == [0, None, 2, None, 4]
    assert (sensor.probed, sensor.dropped_by_noise) == (5, 2)


async def test_run_stores_kept_readings_only() -> None:
    """run() puts the readings the noise keeps and skips the others, seqs still counting."""
    sink = Sink()
    sensor = Sensor("a", lambda: 1, 0.001, noise=lambda r: r.seq % 3 != 1)
    task = asyncio.create_task(sensor.run(sink))
    try:
        await sink.wait_for_count("a", 6)
    finally:
        await stop(task)
    seqs = [r.seq for r in sink.readings]
    assert seqs[:6] == [0, 2, 3, 5, 6, 8]


async def test_a_failing_probe_does_not_stop_the_sensor() -> None:
    """A probe that raises is counted and skipped; it consumes no seq."""
    calls = 0

    def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("sensor unplugged")
        return calls

    sink = Sink()
    sensor = Sensor("a", flaky, 0.001)
    task = asyncio.create_task(sensor.run(sink))
    try:
        await sink.wait_for_count("a", 3)
    finally:
        await stop(task)
    assert [(r.seq, r.value) for r in sink.readings[:3]] == [(0, 1), (1, 3), (2, 4)]
    assert sensor.failed == 1


async def test_a_stuck_put_does_not_delay_other_sensors() -> None:
    """One sensor whose put hangs forever does not keep another from probing."""
    sink = Sink(hold="stuck")
    stuck = Sensor("stuck", lambda: 0, 0.001)
    free = Sensor("free", lambda: 0, 0.001)
    tasks = [asyncio.create_task(s.run(sink)) for s in (stuck, free)]
    try:
        await sink.wait_for_count("free", 20)
    finally:
        await stop(*tasks)
    assert stuck.probed == 1
    assert free.probed >= 20
