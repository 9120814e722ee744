"""The sensor fleet: N sensors, one outbox, one connection, a fixed number of slots.

The sensors and the link run side by side and meet only at the outbox: each sensor
probes on its own schedule and writes its readings to the outbox; the link
(:mod:`~forkwire.client.sensors.link`) sends them in frames, one network slot each, and
deletes them when they are acked. This module is the run around them: start, the end
(a duration, a stop, Ctrl-C, or every sensor done and delivered), the drain, the summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence

from forkwire.client.logs import get_logger
from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.kinds import make_sensor
from forkwire.client.sensors.link import Link
from forkwire.client.sensors.network import Network
from forkwire.client.sensors.outbox import Outbox
from forkwire.client.sensors.sensor import Sensor
from forkwire.client.sensors.status import FleetSummary, SensorStats

log = get_logger("forkwire.sensors")


def build_sensors(config: FleetConfig) -> list[Sensor]:
    """The sensors a config describes: ``count`` of them, kinds cycled, names numbered,
    their first probes spread over the first period."""
    sensors = []
    for i in range(config.count):
        sensor = make_sensor(
            config.kinds[i % len(config.kinds)], f"{config.prefix}-{i}", period=config.period
        )
        if config.noise is not None:
            sensor.noise = config.noise(sensor)
        sensor.phase = i / config.count  # spread over the first period, not in lockstep
        sensors.append(sensor)
    return sensors


async def run_fleet(
    config: FleetConfig,
    *,
    sensors: Sequence[Sensor] | None = None,
    stop: asyncio.Event | None = None,
) -> FleetSummary:
    """Run a fleet until ``duration`` passes, ``stop`` is set, or the task is cancelled,
    or until every sensor has ended (its probe raised ``StopProbing``) and the outbox holds
    none of their readings any more (all acked, or sent without acks over plain UDP).

    Cancelling (Ctrl-C under ``asyncio.run``) is a normal way to end: probing stops, the
    acks of readings in flight are awaited for up to ``drain_timeout``, the rest stays in
    the outbox, and the summary is returned instead of the cancellation.

    Args:
        sensors: run these instead of the ones ``config`` describes (custom probes).

    Raises:
        ValueError: a bad config, or two sensors with one name.
    """
    return await Fleet(config, sensors=sensors).run(stop)


class Fleet:
    """One run of a sensor fleet; see :func:`run_fleet`.

    Single use: the outbox is opened here and closed when :meth:`run` ends.
    """

    def __init__(self, config: FleetConfig, *, sensors: Sequence[Sensor] | None = None) -> None:
        self.config = config
        self.sensors = list(sensors) if sensors is not None else build_sensors(config)
        names = Counter(sensor.name for sensor in self.sensors)
        twice = sorted(name for name, n in names.items() if n > 1)
        if twice:
            # Two sensors sharing a name would share a seq counter and one stream.
            raise ValueError(f"sensor names must be unique, repeated: {twice}")
        self.network = Network(config.slots)
        self.outbox = Outbox(config.outbox, max_rows=config.outbox_max, policy=config.outbox_policy)
        self.outbox.on_deleted = self._on_delivered
        self.link = Link(
            config,
            self.outbox,
            self.network,
            on_change=self._notify,
            on_delivered=self._on_delivered,
        )
        self._delivered = asyncio.Event()  # rows left the outbox (acked, or sent over UDP)
        self._stopped = False
        self._started = time.monotonic()

    def summary(self) -> FleetSummary:
        """The fleet's counters right now."""
        return FleetSummary(
            running=not self._stopped,
            server=self.link.server,
            connected=self.link.connected,
            slots=self.network.slots,
            in_flight=self.network.in_flight,
            max_in_flight=self.network.max_in_flight,
            producer=self.outbox.producer,
            backlog=self.outbox.backlog,
            ack_p50_ms=self.link.in_flight.percentile_ms(50),
            ack_p99_ms=self.link.in_flight.percentile_ms(99),
            reconnects=self.link.reconnects,
            failed_connects=self.link.failed_connects,
            elapsed=time.monotonic() - self._started,
            sensors=tuple(
                SensorStats(
                    name=s.name,
                    kind=s.kind,
                    probed=s.probed,
                    sent=self.link.sent[s.name],
                    acked=self.outbox.acked_by_sensor[s.name],
                    acked_backlog=self.outbox.acked_backlog_by_sensor[s.name],
                    conflicts=self.link.conflicts[s.name],
                    pending=self.outbox.pending_count(s.name),
                    dropped_by_noise=s.dropped_by_noise,
                    dropped_by_outbox=self.outbox.dropped_by_sensor[s.name],
                )
                for s in self.sensors
            ),
        )

    async def run(self, stop: asyncio.Event | None = None) -> FleetSummary:
        """Run until the config's ``duration``, ``stop``, or cancellation; see run_fleet."""
        self._started = time.monotonic()
        if self.outbox.backlog:
            log.warning(
                f"the outbox holds {self.outbox.backlog:,} readings of an earlier run; "
                "they are sent first",
                outbox=self.outbox.path,
                producer=self.outbox.producer,
            )
        probing = [
            asyncio.create_task(s.run(self.outbox, self._on_stored), name=f"sensor {s.name}")
            for s in self.sensors
        ]
        link = asyncio.create_task(self.link.run(), name="fleet link")
        status = asyncio.create_task(self._report_status(), name="fleet status")
        try:
            try:
                await self._until_end(stop, link, probing)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None:
                    # Cancellation is how Ctrl-C ends a run; the caller gets the summary.
                    task.uncancel()
                log.info("fleet cancelled, draining")
            await self._cancel(probing)
            await self._drain(link)
        finally:
            try:
                await self._cancel([*probing, link, status])
            finally:
                # Even if a second Ctrl-C cuts the cleanup short, the file is closed cleanly.
                self.outbox.close()
                self._stopped = True
        summary = self.summary()
        if self.config.on_status is not None:
            self.config.on_status(summary)
        log.info(
            "fleet stopped",
            sent=summary.sent,
            acked=summary.acked,
            pending=summary.pending,
            reconnects=summary.reconnects,
        )
        return summary

    async def _until_end(
        self,
        stop: asyncio.Event | None,
        link: asyncio.Task[None],
        probing: list[asyncio.Task[None]],
    ) -> None:
        ender = asyncio.create_task(self._wait_stop(stop))
        watched: set[asyncio.Task[None]] = {ender, link, *probing}
        delivered: asyncio.Task[None] | None = None
        try:
            while True:
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {ender, delivered}:
                    task.result()  # a failed worker: let its error out
                    if task is link:
                        raise RuntimeError(f"{task.get_name()} ended on its own")
                    watched.discard(task)  # a sensor whose probe raised StopProbing
                if ender in done or delivered in done:
                    return
                if probing and delivered is None and watched.isdisjoint(probing):
                    # Every sensor ended: keep the link up until what they stored is out.
                    delivered = asyncio.create_task(self._until_delivered())
                    watched.add(delivered)
        finally:
            ender.cancel()
            if delivered is not None:
                delivered.cancel()

    async def _until_delivered(self) -> None:
        while any(self.outbox.pending_count(s.name) for s in self.sensors):
            self._delivered.clear()
            await self._delivered.wait()

    async def _wait_stop(self, stop: asyncio.Event | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.duration):
                await (stop or asyncio.Event()).wait()

    async def _drain(self, link: asyncio.Task[None]) -> None:
        # Probing has stopped; the sender stops taking slots, the link says bye once the
        # readings in flight are acked, and whatever is left stays in the outbox.
        self.link.close()
        try:
            async with asyncio.timeout(self.config.drain_timeout):
                await asyncio.shield(link)
        except TimeoutError:
            log.warning(
                "gave up waiting for acks",
                in_flight=self.network.in_flight,
                timeout=self.config.drain_timeout,
            )

    @staticmethod
    async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        # Errors were already reported by _until_end; here only the cleanup matters.
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_stored(self, _reading: object) -> None:
        self.link.wake()

    def _on_delivered(self) -> None:
        self._delivered.set()

    async def _report_status(self) -> None:
        if self.config.on_status is None:
            return
        while True:
            # A display refresh rate, not synchronisation.
            await asyncio.sleep(self.config.status_interval)
            self._notify()

    def _notify(self) -> None:
        if self.config.on_status is not None:
            self.config.on_status(self.summary())
