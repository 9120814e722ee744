"""The sensor fleet's link to the server: one connection, a fixed number of slots.

The sender walks the outbox oldest first, takes a network slot per frame and sends
``readings`` frames of up to ``batch`` readings, as the outbox's producer; the receiver
takes the replies: an ``ack`` deletes its frame's rows and gives the slot back; a
``conflict`` drops the refused readings (they can never be stored) and sends the rest of
the frame again.

When the connection is lost, every slot is released, the link reconnects with exponential
backoff, and the sender starts again from the oldest row: whatever was not acked is resent
(the server stores a ``(sensor, producer, seq)`` once and acks it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Final, TypeAlias

from forkwire.client.backoff import Backoff
from forkwire.client.connection import Connection
from forkwire.client.errors import AccessDenied, ConnectError, ConnectionLost
from forkwire.client.logs import get_logger
from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.frames import Frame, InFlight
from forkwire.client.sensors.network import Network
from forkwire.client.sensors.outbox import Outbox
from forkwire.client.transport import Transport
from forkwire.client.udp import DEFAULT_DATAGRAM, UdpLink
from forkwire.protocol import Ack, Error, ErrorCode, Ping, Reading, ReadingsMsg

log = get_logger("forkwire.sensors")

#: How long a closing link says ``bye`` and waits for the answer.
_BYE_TIMEOUT: Final = 1.0

#: An outbox row: its id and its reading.
_Row: TypeAlias = tuple[int, Reading]

#: The sender reads at least this many outbox rows at a time: with small frames, one
#: query per frame costs more than the frame. Small, so the rows it holds unsent are few.
_PREFETCH: Final = 64


class Link:
    """The fleet's connection: sends the outbox's rows in frames, one slot each, and
    settles them with the replies.

    Args:
        config: the fleet's config (server, transport, batch, timeouts, backoff).
        outbox: where the rows come from, and where acks and conflicts delete them.
        network: the slots.
        on_change: called when the counters a status display shows change.
        on_delivered: called when rows left the outbox outside a flush (a conflict).
    """

    def __init__(
        self,
        config: FleetConfig,
        outbox: Outbox,
        network: Network,
        *,
        on_change: Callable[[], None],
        on_delivered: Callable[[], None],
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.network = network
        self.server = f"{config.transport}://{config.host}:{config.port}"
        #: Connections lost after they were up, and connection attempts that failed.
        self.reconnects = 0
        self.failed_connects = 0
        self.connected = False
        #: Readings sent and readings refused as conflicts, per sensor.
        self.sent: Counter[str] = Counter()
        self.conflicts: Counter[str] = Counter()
        self.in_flight = InFlight()
        self._on_change = on_change
        self._on_delivered = on_delivered
        self._fire_and_forget = config.transport is Transport.udp and not config.udp_ack
        self._resend: list[list[_Row]] = []  # the rest of frames a conflict refused
        self._ahead: deque[_Row] = deque()  # rows read, not sent yet
        self._wake = asyncio.Event()  # new rows in the outbox, or closing
        self._closed = asyncio.Event()  # closing: cuts a reconnect backoff short
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        self._closing = False
        self._progress_at = 0.0  # loop time of the last ack, or of the first send after one

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    def close(self) -> None:
        """Stop taking slots; the run says bye once the frames in flight are answered."""
        self._closing = True
        self._closed.set()
        self._wake.set()

    async def run(self) -> None:
        """Connect, converse, reconnect with backoff, until :meth:`close` (then drain).

        Raises:
            ConnectError: the server was never reached within ``connect_timeout``.
        """
        started = time.monotonic()
        ever_connected = False
        while not self._closing:
            try:
                connection = await self._connect()
            except AccessDenied:
                raise  # a wrong token or TLS setting: no retry can fix it
            except ConnectError as exc:
                self.failed_connects += 1
                self._on_change()
                limit = self.config.connect_timeout
                if not ever_connected and limit is not None and time.monotonic() - started >= limit:
                    # A wrong port or host, most likely: retrying forever would hide it.
                    raise ConnectError(
                        f"{exc}; gave up after {limit:g} s without ever reaching the "
                        "server (--wait keeps trying)"
                    ) from None
                await self._back_off(str(exc))
                continue
            ever_connected = True
            # The backoff starts over at the first ack, not here: a server that accepts
            # the connection and then refuses every frame (its store is down) must not be
            # reconnected to many times a second.
            self.connected = True
            log.info("connected", server=self.server, welcome=connection.welcome.server)
            self._on_change()
            advice = None
            try:
                await self._converse(connection)
            except* (ConnectionLost, OSError) as group:
                reason = str(group.exceptions[0])
                first = group.exceptions[0]
                advice = first.retry_after if isinstance(first, ConnectionLost) else None
            else:
                return  # said bye while closing
            finally:
                self.connected = False
                self.in_flight.clear()
                self._resend.clear()  # still in the outbox: a new connection resends it
                self._ahead.clear()
                self.network.release_all()
                await connection.close()
            if self._closing:
                return  # lost while draining: the rest stays in the outbox
            self.reconnects += 1
            self._on_change()
            await self._back_off(reason, advice)

    async def _connect(self) -> Connection | UdpLink:
        if self.config.transport is Transport.udp:
            return await UdpLink.open(
                self.config.host, self.config.port, token=self.config.credentials.token
            )
        return await Connection.open(
            self.config.host,
            self.config.port,
            client="forkwire-sensors",
            credentials=self.config.credentials,
        )

    async def _back_off(self, reason: str, advice: float | None = None) -> None:
        delay = self._backoff.next_delay(at_least=advice)
        log.warning(
            f"server away, retrying in {delay:.2f} s",
            server=self.server,
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
                await self._idle(connection)
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
                self.sent.update(r.sensor for r in items)
                self.outbox.ack_rows(row_id for row_id, _ in rows)
                self.network.release()
                self._backoff.reset()  # no acks over UDP: a send is the progress
                continue
            if not self.in_flight:
                self._progress_at = loop.time()
            self.in_flight.add(Frame(items, [row_id for row_id, _ in rows]))
            self.sent.update(r.sensor for r in items)
            await connection.send(ReadingsMsg(producer=producer, items=items))
        await self.network.wait_idle()
        raise _Drained

    async def _idle(self, connection: Connection | UdpLink) -> None:
        """Wait for new rows; over TCP, say ``ping`` before the server's ``idle_timeout``
        would close a connection that has had nothing to send."""
        limit = connection.welcome.limits.get("idle_timeout")
        if isinstance(connection, UdpLink) or not limit:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(limit / 3):
                await self._wake.wait()
        except TimeoutError:
            await connection.send(Ping())

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
                if self.in_flight and loop.time() - self._progress_at >= timeout:
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
                log.warning(
                    "server refused readings",
                    code=message.code,
                    error=message.message,
                    retry_after=message.retry_after,
                )
                raise ConnectionLost(
                    f"server error {message.code}: {message.message}",
                    retry_after=message.retry_after,
                )
            else:
                log.debug("ignored message", type=message.type)

    def _on_ack(self, ack: Ack) -> None:
        frame = self.in_flight.acked(ack.acked)
        if frame is None:
            # Every frame sent on this connection is in flight until answered: an ack
            # that matches none is a server's mistake. Its rows, if any, stay and go again.
            log.warning("ack matches no frame in flight", acked=ack.acked)
            return
        self.outbox.ack_rows(frame.ids)  # deleted with the next flush, which says so
        self.network.release()
        self._backoff.reset()

    def _on_conflict(self, error: Error) -> None:
        assert error.keys is not None
        frame = self.in_flight.refused(error.keys)
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
        self.conflicts.update(refused)
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
        self._on_delivered()
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
