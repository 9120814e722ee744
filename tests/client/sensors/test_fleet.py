"""The sensor fleet against a fake ingest server: slots, outbox, reconnects, seqs, policies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_ingest import FakeIngest

from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.fleet import Fleet, run_fleet
from forkwire.client.sensors.outbox import Outbox
from forkwire.client.sensors.sensor import Sensor
from forkwire.client.sensors.status import FleetSummary
from forkwire.client.transport import Transport
from forkwire.protocol import Reading

#: Every wait in these tests is event-driven and bounded by this.
WAIT = 10.0


class CountingProbe:
    """A probe returning 1, 2, 3...; sets ``reached`` at ``target`` calls."""

    def __init__(self, target: int = 1, hook: Callable[[], None] | None = None) -> None:
        self.calls = 0
        self.target = target
        self.hook = hook
        self.reached = asyncio.Event()

    def __call__(self) -> int:
        self.calls += 1
        if self.hook is not None:
            self.hook()
        if self.calls >= self.target:
            self.reached.set()
        return self.calls


class Run:
    """A fleet running in a task, stopped by :meth:`finish`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(fleet.run(self.stop))

    async def finish(self) -> FleetSummary:
        self.stop.set()
        return await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
async def fake() -> AsyncIterator[FakeIngest]:
    server = FakeIngest()
    await server.start()
    try:
        yield server
    finally:
        if server.serving:
            await server.stop()


@pytest.fixture
async def launch() -> AsyncIterator[Callable[[Fleet], Run]]:
    """Starts fleets; any still running when the test ends (it failed) are cancelled."""
    runs: list[Run] = []

    def start(fleet: Fleet) -> Run:
        runs.append(Run(fleet))
        return runs[-1]

    yield start
    for run in runs:
        run.task.cancel()
    await asyncio.gather(*(run.task for run in runs), return_exceptions=True)


def make_config(fake: FakeIngest, tmp_path: Path, **changes: Any) -> FleetConfig:
    settings: dict[str, Any] = {
        "port": fake.port,
        "outbox": tmp_path / "outbox.sqlite",
        "kinds": ["fast"],
        "period": 0.01,
        "backoff_initial": 0.02,
        "backoff_max": 0.1,
        "drain_timeout": 2.0,
    }
    settings.update(changes)
    return FleetConfig(**settings)


async def test_never_more_than_five_in_flight(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """Five fast sensors against slow acks keep exactly the five slots busy, never more."""
    fake.ack_delay = 0.05
    run = launch(Fleet(make_config(fake, tmp_path, count=5, batch=1)))
    await fake.wait_until(lambda: len(fake.stored) >= 40)
    summary = await run.finish()
    assert fake.max_frames_outstanding == 5
    assert fake.max_outstanding == 5  # one reading a frame
    assert summary.max_in_flight == 5


async def test_one_slot_means_one_in_flight(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """With slots=1 the server never holds more than one unacked frame."""
    fake.ack_delay = 0.01
    run = launch(Fleet(make_config(fake, tmp_path, count=3, slots=1)))
    await fake.wait_until(lambda: len(fake.stored) >= 15)
    summary = await run.finish()
    assert fake.max_frames_outstanding == 1
    assert summary.max_in_flight == 1


async def test_a_slot_carries_a_frame_of_up_to_batch_readings(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """While acks are slow, readings pile up and go out many to a frame, up to --batch,
    with never more than the slots' frames in flight."""
    fake.ack_delay = 0.05
    run = launch(Fleet(make_config(fake, tmp_path, count=5, batch=30)))
    await fake.wait_until(lambda: len(fake.stored) >= 200)
    await run.finish()
    assert 5 < fake.max_items <= 30
    assert fake.max_frames_outstanding <= 5


async def test_frames_carry_the_outboxs_producer(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """Every frame names the outbox's producer; a fresh outbox is a new producer."""
    run = launch(Fleet(make_config(fake, tmp_path, count=2)))
    await fake.wait_until(lambda: len(fake.stored) >= 10)
    first = await run.finish()
    assert len(first.producer) == 32
    assert set(fake.producers.values()) == {first.producer}
    second = launch(Fleet(make_config(fake, tmp_path, count=2, outbox=tmp_path / "other.sqlite")))
    await asyncio.sleep(0.1)
    summary = await second.finish()
    assert summary.producer not in ("", first.producer)


async def test_a_conflict_drops_the_refused_and_resends_the_rest(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """Readings the server holds with another value are dropped and counted; the rest of
    their frame is sent again and acked, and the fleet stays connected."""
    fake.stored[("sensor-0", 0)] = Reading(sensor="sensor-0", seq=0, ts=0.0, value=12345)
    fake.ack_gate.clear()
    run = launch(Fleet(make_config(fake, tmp_path, count=1, batch=50)))
    await asyncio.sleep(0.2)  # let seqs 0.. pile up into one frame
    fake.ack_gate.set()
    await fake.wait_until(lambda: len(fake.seqs("sensor-0")) >= 10)
    summary = await run.finish()
    assert fake.conflicts == 1
    assert summary.conflicts == 1
    assert fake.connections == 1
    assert summary.pending == 0
    assert fake.stored[("sensor-0", 0)].value == 12345


async def test_outbox_holds_a_reading_until_it_is_acked(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """A sent reading stays in the outbox while its ack is held, and leaves with the ack."""
    fake.ack_gate.clear()
    sensor = Sensor("once", CountingProbe(), period=3600.0)
    fleet = Fleet(make_config(fake, tmp_path, slots=1), sensors=[sensor])
    run = launch(fleet)
    await fake.wait_until(lambda: fake.received == 1)
    assert [(r.sensor, r.seq) for r in fleet.outbox.pending()] == [("once", 0)]
    fake.ack_gate.set()
    await asyncio.wait_for(fleet.network.wait_idle(), WAIT)
    assert fleet.outbox.pending() == []
    summary = await run.finish()
    assert (summary.sent, summary.acked, summary.pending) == (1, 1, 0)


async def test_probing_goes_on_while_the_network_is_stalled(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """With every slot waiting for an ack, sensors still probe into the outbox."""
    fake.ack_gate.clear()
    probe = CountingProbe(target=30)
    sensor = Sensor("busy", probe, period=0.001)
    fleet = Fleet(
        make_config(fake, tmp_path, slots=1, batch=1, drain_timeout=0.1), sensors=[sensor]
    )
    run = launch(fleet)
    await asyncio.wait_for(probe.reached.wait(), WAIT)
    assert fake.received == 1
    summary = await run.finish()
    assert summary.pending >= 29
    assert summary.acked == 0


async def test_seq_continues_across_a_fleet_restart(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """A second fleet on the same outbox continues each sensor's seqs; none is reused."""
    config = make_config(fake, tmp_path, count=2)
    run = launch(Fleet(config))
    await fake.wait_until(lambda: len(fake.stored) >= 10)
    before = await run.finish()
    run = launch(Fleet(config))
    probed = {s.name: s.probed for s in before.sensors}
    await fake.wait_until(lambda: all(len(fake.seqs(n)) >= probed[n] + 5 for n in probed))
    after = await run.finish()
    assert fake.duplicates == 0
    for stats in after.sensors:
        seqs = fake.seqs(stats.name)
        assert seqs == list(range(len(seqs)))
        assert len(seqs) + stats.pending == probed[stats.name] + stats.probed


async def test_reconnects_after_a_server_restart_on_the_same_port(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """The fleet survives a server restart by itself; every seq ends up stored exactly once."""
    fake.ack_delay = 0.02
    refused = asyncio.Event()

    def watch(status: FleetSummary) -> None:
        if status.failed_connects >= 2:
            refused.set()

    config = make_config(fake, tmp_path, count=3, on_status=watch)
    run = launch(Fleet(config))
    await fake.wait_until(lambda: len(fake.stored) >= 20 and fake.outstanding > 0)
    await fake.stop()  # readings in flight are lost with the connection
    await asyncio.wait_for(refused.wait(), WAIT)  # the fleet found the port closed, twice
    stored_before = len(fake.stored)
    await fake.start()
    await fake.wait_until(lambda: fake.connections >= 2 and len(fake.stored) >= stored_before + 30)
    summary = await run.finish()
    assert summary.reconnects >= 1
    with Outbox(config.outbox) as outbox:
        for stats in summary.sensors:
            seqs = fake.seqs(stats.name)
            assert seqs == list(range(len(seqs))), f"{stats.name} has a gap or a repeat"
            left = [r.seq for r in outbox.pending(stats.name)]
            assert set(seqs) | set(left) == set(range(stats.probed))


async def test_a_server_that_stops_acking_is_left_and_rejoined(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """No ack within ack_timeout counts as a lost connection: reconnect and resend."""
    fake.ack_gate.clear()
    run = launch(Fleet(make_config(fake, tmp_path, count=2, ack_timeout=0.1)))
    await fake.wait_until(lambda: fake.connections >= 2)
    fake.ack_gate.set()
    await fake.wait_until(lambda: len(fake.stored) >= 20)
    summary = await run.finish()
    assert summary.reconnects >= 1
    for stats in summary.sensors:
        seqs = fake.seqs(stats.name)
        assert seqs == list(range(len(seqs)))


async def test_an_error_frame_makes_the_fleet_resend(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """A refused frame names no seqs, so the fleet reconnects and resends what is unacked."""
    fake.refuse_frames = 3
    run = launch(Fleet(make_config(fake, tmp_path, count=2)))
    await fake.wait_until(lambda: fake.refuse_frames == 0 and len(fake.stored) >= 20)
    summary = await run.finish()
    assert summary.reconnects >= 1
    for stats in summary.sensors:
        seqs = fake.seqs(stats.name)
        assert seqs == list(range(len(seqs)))


async def test_drop_oldest_keeps_the_outbox_bounded_while_the_server_is_away(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """Under drop-oldest a server outage keeps max_rows readings and counts the rest."""
    await fake.stop()
    probe = CountingProbe(target=20)
    sensor = Sensor("lossy", probe, period=0.001)
    config = make_config(fake, tmp_path, outbox_max=5, outbox_policy="drop-oldest")
    run = launch(Fleet(config, sensors=[sensor]))
    await asyncio.wait_for(probe.reached.wait(), WAIT)
    summary = await run.finish()
    [stats] = summary.sensors
    assert not summary.connected
    assert stats.pending == 5
    assert stats.dropped_by_outbox == stats.probed - 5
    with Outbox(config.outbox) as outbox:
        assert [r.seq for r in outbox.pending()] == list(range(stats.probed - 5, stats.probed))


async def test_block_policy_waits_and_loses_nothing(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """Under block a server outage pauses the sensor at max_rows; nothing is dropped."""
    await fake.stop()
    sizes: list[int] = []
    fleet_box: list[Fleet] = []
    probe = CountingProbe(target=4, hook=lambda: sizes.append(len(fleet_box[0].outbox)))
    sensor = Sensor("patient", probe, period=0.001)
    fleet = Fleet(make_config(fake, tmp_path, outbox_max=3), sensors=[sensor])
    fleet_box.append(fleet)
    run = launch(fleet)
    await asyncio.wait_for(probe.reached.wait(), WAIT)  # the 4th reading waits for room
    await fake.start()
    await fake.wait_until(lambda: len(fake.stored) >= 15)
    summary = await run.finish()
    [stats] = summary.sensors
    assert max(sizes) <= 3
    assert stats.dropped_by_outbox == 0
    seqs = fake.seqs("patient")
    assert seqs == list(range(len(seqs)))


async def test_noise_drops_leave_gaps_in_the_seqs(
    fake: FakeIngest, launch: Callable[[Fleet], Run], tmp_path: Path
) -> None:
    """A reading dropped by the noise hook consumes its seq and never reaches the server."""
    sensor = Sensor("noisy", CountingProbe(), period=0.005, noise=lambda r: r.seq % 2 == 0)
    run = launch(Fleet(make_config(fake, tmp_path), sensors=[sensor]))
    await fake.wait_until(lambda: len(fake.stored) >= 10)
    summary = await run.finish()
    seqs = fake.seqs("noisy")
    assert seqs == list(range(0, 2 * len(seqs), 2))
    [stats] = summary.sensors
    assert stats.dropped_by_noise == stats.probed // 2


async def test_config_builds_named_sensors_with_a_noise_factory(
    fake: FakeIngest, tmp_path: Path
) -> None:
    """run_fleet names sensors prefix-i, cycles kinds and ends after `duration`."""
    config = make_config(
        fake,
        tmp_path,
        count=3,
        kinds=["fast", "sine"],
        prefix="t",
        duration=0.3,
        noise=lambda sensor: None,
    )
    summary = await asyncio.wait_for(run_fleet(config), WAIT)
    assert [(s.name, s.kind) for s in summary.sensors] == [
        ("t-0", "fast"),
        ("t-1", "sine"),
        ("t-2", "fast"),
    ]
    assert summary.acked > 0


async def test_cancelling_returns_the_summary(fake: FakeIngest, tmp_path: Path) -> None:
    """Cancelling run_fleet (Ctrl-C) drains and returns a summary instead of raising."""
    statuses: list[FleetSummary] = []
    config = make_config(fake, tmp_path, count=2, on_status=statuses.append)
    task = asyncio.create_task(run_fleet(config))
    await fake.wait_until(lambda: len(fake.stored) >= 10)
    task.cancel()
    summary = await asyncio.wait_for(task, WAIT)
    assert isinstance(summary, FleetSummary)
    assert summary.in_flight == 0
    assert summary.acked >= 10
    assert statuses[-1] == summary


def test_config_refuses_unknown_kinds_and_bad_batches() -> None:
    """FleetConfig checks its kinds, batch and transport at construction."""
    with pytest.raises(ValueError, match="unknown sensor kinds"):
        FleetConfig(kinds=["nope"])
    with pytest.raises(ValueError, match="batch"):
        FleetConfig(batch=0)
    with pytest.raises(ValueError, match="'sctp' is not a valid Transport"):
        FleetConfig(transport="sctp")  # type: ignore[arg-type]
    assert FleetConfig(transport="udp").transport is Transport.udp  # type: ignore[arg-type]


def test_fleet_refuses_duplicate_sensor_names(tmp_path: Path) -> None:
    """Two sensors with one name would share a stream, so the fleet refuses them."""
    sensors = [Sensor("dup", lambda: 1, 1.0), Sensor("dup", lambda: 2, 1.0)]
    with pytest.raises(ValueError, match="unique"):
        Fleet(FleetConfig(outbox=tmp_path / "o.sqlite"), sensors=sensors)
