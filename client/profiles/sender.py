"""The sender process: empties the spool into the server, a record leaving only on its ack.

Its part in the run (and the generator's and the processor's) is told in
:mod:`forkwire.client.profiles.pipeline`.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from pydantic import JsonValue

from forkwire.client.backoff import Backoff
from forkwire.client.connection import Connection
from forkwire.client.errors import ConnectError, ConnectionLost
from forkwire.client.logs import get_logger
from forkwire.client.profiles.agewords import age_words
from forkwire.client.profiles.children import child_setup
from forkwire.client.profiles.config import SENSOR, ProfilesConfig
from forkwire.client.profiles.spool import Spool, SpoolEntry, spool_producer
from forkwire.protocol import Ack, Error, ErrorCode, Reading, ReadingsMsg

log = get_logger("forkwire.profiles")


def sent_line(profile: dict[str, JsonValue], locale: str) -> str:
    """``sent: <full name>, <sex>, <job>, <age in words>``."""
    age = profile.get("age")
    words = age_words(age, locale) if isinstance(age, int) else "? years"
    return f"sent: {profile.get('name')}, {profile.get('sex')}, {profile.get('job')}, {words}"


def send(
    config: ProfilesConfig, lock: Any, doorbell: PipeEnd, control: PipeEnd, result: PipeEnd
) -> None:
    """The sender process: empty the spool into the server, a record leaving on its ack."""
    child_setup(config)
    producer = spool_producer(config.producer_path, config.seq_path)
    spool = Spool(config.spool_path, config.format, lock)
    sender = _Sender(config, spool, producer, doorbell, control)
    try:
        asyncio.run(sender.run())
    finally:
        result.send(
            {
                "sent": sender.sent,
                "retried": len(sender.retried),
                "failures": sender.failures,
                "conflicts": sender.conflicts,
            }
        )


class _Sender:
    def __init__(
        self,
        config: ProfilesConfig,
        spool: Spool,
        producer: str,
        doorbell: PipeEnd,
        control: PipeEnd,
    ) -> None:
        self.config = config
        self.spool = spool
        self.producer = producer or None  # "" is the anonymous producer: no field at all
        self.doorbell = doorbell
        self.control = control
        self.sent = 0
        self.failures = 0
        self.conflicts = 0
        #: Seqs of records that failed to send at least once.
        self.retried: set[int] = set()
        self.draining = False
        self.stopping = False
        self._ring = asyncio.Event()
        self._connection: Connection | None = None
        self._deadline: asyncio.Timeout | None = None
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                loop.add_reader(self.doorbell.fileno(), self._on_doorbell)
                loop.add_reader(self.control.fileno(), self._on_control)
                try:
                    await self._send_spool()
                finally:
                    loop.remove_reader(self.doorbell.fileno())
                    loop.remove_reader(self.control.fileno())
        except TimeoutError:
            left = len(self.spool.load())
            log.warning("sender stopped before the spool was empty", left=left)
        finally:
            if self._connection is not None:
                await self._connection.goodbye(1.0)
                await self._connection.close()

    def _on_doorbell(self) -> None:
        try:
            while self.doorbell.poll():
                self.doorbell.recv_bytes()
        except (EOFError, OSError):
            # The processor has exited: nothing will ring any more.
            asyncio.get_running_loop().remove_reader(self.doorbell.fileno())
        self._ring.set()

    def _on_control(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._deadline is not None
        try:
            order = self.control.recv()
        except (EOFError, OSError):
            order = "stop"  # the parent is gone
            loop.remove_reader(self.control.fileno())
        if self.stopping or self._deadline.expired():
            return
        if order == "drain" and not self.draining:
            self.draining = True
            self._deadline.reschedule(loop.time() + self.config.drain_timeout)
            self._ring.set()
        elif order == "stop":
            self.stopping = True
            self._deadline.reschedule(loop.time())

    async def _send_spool(self) -> None:
        while True:
            self._ring.clear()
            entries = self.spool.load()
            if not entries:
                if self.draining:
                    return
                await self._ring.wait()
                continue
            batch = entries[: self.config.batch]
            try:
                acked, refused = await self._send(batch)
            except (ConnectError, ConnectionLost, OSError, TimeoutError) as exc:
                await self._disconnect()
                self.failures += 1
                self.retried.update(entry["seq"] for entry in batch)
                advice = exc.retry_after if isinstance(exc, ConnectionLost) else None
                delay = self._backoff.next_delay(at_least=advice)
                log.warning(
                    "send failed, will retry",
                    reason=str(exc),
                    records=len(batch),
                    retry_in=round(delay, 3),
                )
                # The backoff timer; the stop deadline still cuts it short.
                await asyncio.sleep(delay)
                continue
            self._backoff.reset()
            if refused:
                # Held by the server with another value: they can never be stored.
                self.conflicts += len(refused)
                log.warning(
                    "server refused records whose key it holds with another value; dropped",
                    records=len(refused),
                    seqs=sorted(refused)[:5],
                )
            self.spool.remove(acked | refused)
            for entry in batch:
                if entry["seq"] in acked:
                    self.sent += 1
                    print(sent_line(entry["profile"], self.config.locale), flush=True)

    async def _send(self, batch: list[SpoolEntry]) -> tuple[set[int], set[int]]:
        """Send a batch; return the seqs acked and the seqs refused as conflicts (the rest
        of a batch with conflicts is neither, and goes again)."""
        if self._connection is None:
            self._connection = await Connection.open(
                self.config.host,
                self.config.port,
                client="forkwire-profiles",
                connect_timeout=self.config.connect_timeout,
                credentials=self.config.credentials,
            )
        items = [
            Reading(sensor=SENSOR, seq=entry["seq"], ts=entry["ts"], value=entry["profile"])
            for entry in batch
        ]
        await self._connection.send(ReadingsMsg(producer=self.producer, items=items))
        async with asyncio.timeout(self.config.ack_timeout):
            while True:
                reply = await self._connection.recv()
                if isinstance(reply, Ack):
                    return _seqs(reply.acked.get(SENSOR, [])), set()
                if isinstance(reply, Error) and reply.code == ErrorCode.CONFLICT and reply.keys:
                    return set(), _seqs(reply.keys.get(SENSOR, []))
                if isinstance(reply, Error):
                    raise ConnectionLost(
                        f"server error {reply.code}: {reply.message}",
                        retry_after=reply.retry_after,
                    )

    async def _disconnect(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def _seqs(runs: list[tuple[int, int]]) -> set[int]:
    return {seq for first, last in runs for seq in range(first, last + 1)}
