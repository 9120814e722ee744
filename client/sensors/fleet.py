"""The sensor fleet: N sensors, one outbox, one connection, a fixed number of slots.

Three kinds of tasks run side by side and meet only at the outbox:

* each sensor probes on its own schedule and writes its readings to the outbox;
* the sender walks the outbox oldest first, takes a network slot per frame and sends
  ``readings`` frames of up to ``batch`` readings, as the outbox's producer;
* the reader takes the replies: an ``ack`` deletes its frame's rows and gives the slot
  back; a ``conflict`` drops the refused readings (they can never be stored) and sends
  the rest of the frame again.

When the connection is lost, every slot is released, the link reconnects with exponential
backoff, and the sender starts again from the oldest row: whatever was not acked is resent
(the server stores a ``(sensor, producer, seq)`` once and acks it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Final, TypeAlias

import structlog

from forkwire.client.backoff import Backoff
from forkwire.client.connection import Connection
from forkwire.client.errors import ConnectError, ConnectionLost
from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.frames import Frame, InFlight
from forkwire.client.sensors.kinds import make_sensor
from forkwire.client.sensors.network import Network
from forkwire.client.sensors.outbox import Outbox
from forkwire.client.sensors.sensor import Sensor
from forkwire.client.sensors.status import FleetSummary, SensorStats
from forkwire.client.transport import Transport
from forkwire.client.udp import DEFAULT_DATAGRAM, UdpLink
from forkwire.protocol import Ack, Error, ErrorCode, Reading, ReadingsMsg

log = structlog.get_logger("forkwire.sensors")

#: How long a closing fleet says ``bye`` and waits for the answer.
_BYE_TIMEOUT: Final = 1.0

#: An outbox row: its id and its reading.
_Row: TypeAlias = tuple[int, Reading]

#: The sender reads at least this many outbox rows at a time: with small frames, one
#: query per frame costs more than the frame. Small, so the rows it holds unsent are few.
_PREFETCH: Final = 64


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
        #: Connections lost after they were up, and connection attempts that failed.
        self.reconnects = 0
        self.failed_connects = 0
        self._server = f"{config.transport}://{config.host}:{config.port}"
        self._fire_and_forget = config.transport is Transport.udp and not config.udp_ack
        self._sent: Counter[str] = Counter()
        self._conflicts: Counter[str] = Counter()
        self._in_flight = InFlight()
        self._resend: list[list[_Row]] = []  # the rest of frames a conflict refused
        self._ahead: deque[_Row] = deque()  # rows read, not sent yet

        self._wake = asyncio.Event()  # new rows in the outbox, or closing
        self._delivered = asyncio.Event()  # rows left the outbox (acked, or sent over UDP)
        self._closed = asyncio.Event()  # closing: cuts a reconnect backoff short
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        self._closing = False
        self._stopped = False
        self._connected = False
        self._progress_at = 0.0  # loop time of the last ack, or of the first send after one
        self._started = time.monotonic()

    def summary(self) -> FleetSummary:
        """The fleet's counters right now."""
        return FleetSummary(
            running=not self._stopped,
            server=self._server,
            connected=self._connected,
            slots=self.network.slots,
            in_flight=self.network.in_flight,
            max_in_flight=self.network.max_in_flight,
            producer=self.outbox.producer,
            backlog=self.outbox.backlog,
            ack_p50_ms=self._in_flight.percentile_ms(50),
            ack_p99_ms=self._in_flight.percentile_ms(99),
            reconnects=self.reconnects,
            failed_connects=self.failed_connects,
            elapsed=time.monotonic() - self._started,
            sensors=tuple(
                SensorStats(
                    name=s.name,
                    kind=s.kind,
                    probed=s.probed,
                    sent=self._sent[s.name],
                    acked=self.outbox.acked_by_sensor[s.name],
                    acked_backlog=self.outbox.acked_backlog_by_sensor[s.name],
                    conflicts=self._conflicts[s.name],
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
        link = asyncio.create_task(self._link(), name="fleet link")
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
        self._closing = True
        self._closed.set()
        self._wake.set()
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
        self._wake.set()

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

    async def _link(self) -> None:
        while not self._closing:
            try:
                connection = await self._connect()
            except ConnectError as exc:
                self.failed_connects += 1
                self._notify()
                await self._back_off(str(exc))
                continue
            self._backoff.reset()
            self._connected = True
            log.info("connected", server=self._server, welcome=connection.welcome.server)
            self._notify()
            try:
                await self._converse(connection)
            except* (ConnectionLost, OSError) as group:
                reason = str(group.exceptions[0])
            else:
                return  # said bye while closing
            finally:
                self._connected = False
                self._in_flight.clear()
                self._resend.clear()  # still in the outbox: a new connection resends it
                self._ahead.clear()
                self.network.release_all()
                await connection.close()
            if self._closing:
                return  # lost while draining: the rest stays in the outbox
            self.reconnects += 1
            self._notify()
            await self._back_off(reason)

    async def _connect(self) -> Connection | UdpLink:
        if self.config.transport is Transport.udp:
            return await UdpLink.open(self.config.host, self.config.port)
        return await Connection.open(self.config.host, self.config.port, client="forkwire-sensors")

    async def _back_off(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        log.warning(
            f"server away, retrying in {delay:.2f} s",
            server=self._server,
            reason=reason,
            retry_in=round(delay, 3),
        )
        # The backoff timer, cut short when the fleet closes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._closed.wait()

    async def _converse(self, connection: Connection | UdpLink) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._send(connection))
                group.create_task(self._receive(connection))
        except* _Drained:
            await connection.goodbye(_BYE_TIMEOUT)

    async def _send(self, connection: Connection | UdpLink) -> None:
        cursor = 0  # the outbox id of the last row read on this connection
        loop = asyncio.get_running_loop()
        producer = self.outbox.producer or None
        while not self._closing:
            if not self._resend and not self._ahead and not self.outbox.has_after(cursor):
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.network.acquire()  # one slot, one frame
            rows, cursor = self._next_frame(cursor)
            if self._closing or not rows:
                self.network.release()
                continue
            items = [reading for _, reading in rows]
            if self._fire_and_forget:
                # Handed to the kernel is as far as UDP without acks can know: the slot
                # was for the send, and the rows leave the outbox now.
                await connection.send(ReadingsMsg(producer=producer, items=items, ack=False))
                self._sent.update(r.sensor for r in items)
                self.outbox.ack_rows(row_id for row_id, _ in rows)
                self.network.release()
                continue
            if not self._in_flight:
                self._progress_at = loop.time()
            self._in_flight.add(Frame(items, [row_id for row_id, _ in rows]))
            self._sent.update(r.sensor for r in items)
            await connection.send(ReadingsMsg(producer=producer, items=items))
        await self.network.wait_idle()
        raise _Drained

    def _next_frame(self, cursor: int) -> tuple[list[_Row], int]:
        """The next frame's rows and the cursor after them: the rest of a refused frame
        first (the cursor stays), then the outbox's next rows."""
        if self._resend:
            return self._resend.pop(0), cursor
        batch = self.config.batch
        if len(self._ahead) < batch:
            self._ahead.extend(self.outbox.scan(cursor, max(batch, _PREFETCH)))
            if self._ahead:
                cursor = self._ahead[-1][0]
        ahead = self._ahead
        rows = [ahead.popleft() for _ in range(min(batch, len(ahead)))]
        if rows and self.config.transport is Transport.udp:
            kept = _fit_datagram(rows)
            ahead.extendleft(reversed(rows[len(kept) :]))
            rows = kept
        return rows, cursor

    async def _receive(self, connection: Connection | UdpLink) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.config.ack_timeout
        if self.config.transport is Transport.udp:
            timeout = min(timeout, self.config.udp_ack_timeout)
        while True:
            try:
                async with asyncio.timeout(timeout):
                    message = await connection.recv()
            except TimeoutError:
                if self._in_flight and loop.time() - self._progress_at >= timeout:
                    raise ConnectionLost(f"no ack for {timeout} s") from None
                continue
            if isinstance(message, Ack):
                self._on_ack(message)
                self._progress_at = loop.time()
            elif isinstance(message, Error) and message.code == ErrorCode.CONFLICT and message.keys:
                self._on_conflict(message)
                self._progress_at = loop.time()
            elif isinstance(message, Error):
                # Any other error (a failed commit refuses its whole batch) names no
                # readings we can settle. Reconnecting resends everything unacked, which
                # the idempotency key makes safe.
                log.warning("server refused readings", code=message.code, error=message.message)
                raise ConnectionLost(f"server error {message.code}: {message.message}")
            else:
                log.debug("ignored message", type=message.type)

    def _on_ack(self, ack: Ack) -> None:
        frame = self._in_flight.acked(ack.acked)
        if frame is None:
            # Every frame sent on this connection is in flight until answered: an ack
            # that matches none is a server's mistake. Its rows, if any, stay and go again.
            log.warning("ack matches no frame in flight", acked=ack.acked)
            return
        self.outbox.ack_rows(frame.ids)  # deleted with the next flush, which says so
        self.network.release()

    def _on_conflict(self, error: Error) -> None:
        assert error.keys is not None
        frame = self._in_flight.refused(error.keys)
        if frame is None:
            log.warning("conflict names no frame in flight", keys=error.keys)
            return
        refused_keys = {
            (sensor, seq)
            for sensor, runs in error.keys.items()
            for first, last in runs
            for seq in range(first, last + 1)
        }
        rows = list(zip(frame.ids, frame.readings, strict=True))
        refused = self.outbox.discard_rows(
            [row_id for row_id, r in rows if (r.sensor, r.seq) in refused_keys]
        )
        self._conflicts.update(refused)
        log.warning(
            "server refused readings whose key it holds with another value; dropped",
            readings=refused.total(),
            keys={sensor: runs[:3] for sensor, runs in error.keys.items()},
            error=error.message,
        )
        # The rest of the frame may or may not be stored: sending it again gets it acked
        # (as duplicates where it was), so nothing is counted as delivered unconfirmed.
        rest = [(row_id, r) for row_id, r in rows if (r.sensor, r.seq) not in refused_keys]
        if rest:
            self._resend.append(rest)
            self._wake.set()
        self._delivered.set()
        self.network.release()


def _fit_datagram(rows: list[_Row]) -> list[_Row]:
    """As many rows as fit one unfragmented datagram (at least one)."""
    budget = DEFAULT_DATAGRAM - 100  # the frame's header, type, producer, brackets
    kept: list[_Row] = []
    for row in rows:
        budget -= len(row[1].model_dump_json()) + 1
        if kept and budget < 0:
            break
        kept.append(row)
    return kept


class _Drained(Exception):
    """The sender stopped and every slot came back: time to say bye."""
