"""The profile pipeline: a generator, a processor and a sender, three processes at once.

* The **generator** makes a Faker profile every ``interval`` seconds on its own fixed-rate
  clock, whatever the others are doing, and hands it to the processor on a
  ``multiprocessing.Queue``; after ``count`` profiles (or on Ctrl-C) it puts ``None``
  there. That sentinel is the "generator done" signal: it travels behind the last
  profile, so the processor cannot see "done" while profiles are still in the queue (an
  ``Event`` beside the queue could be seen first).
* The **processor** computes each profile's age from its birthdate on today's date, keeps
  those within ``ages``, gives each kept profile the next seq of the ``profiles`` stream
  and appends it to the **spool** file. It rings a doorbell (a one-way ``Pipe``) after
  each append; the data itself travels only through the spool.
* The **sender** reads the spool, sends its records as ``readings`` frames to the server
  (sensor ``profiles``, the record as the value), and removes a record from the spool
  only once the server has acked it. A failed send (no server, a lost connection, an
  ``error`` frame, no ack in time) leaves the records where they are and retries after an
  exponential backoff with jitter. It prints ``sent: <name>, <sex>, <job>, <age>`` for
  each acked record, the age in words of the locale.

The parent starts the three, then shuts them down in order: it waits for the generator
(``count`` profiles made), then for the processor (its queue drained, the spool
written), then tells the sender to drain the spool within ``drain_timeout``; what it
could not send stays in the spool for the next run, and the summary says how much. On
Ctrl-C (the children ignore SIGINT; the parent decides) the generator stops early, the
processor still drains what was made, and the sender stops at once.

The spool file and the seq counter (their formats, torn tails, why a resent record
keeps its seq) live in :mod:`forkwire.client.profiles.spool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from multiprocessing.connection import Connection as PipeEnd
from multiprocessing.connection import wait as wait_for_any
from pathlib import Path
from typing import Any, Final

import structlog
from pydantic import JsonValue

from forkwire.client.connection import Connection
from forkwire.client.errors import ConnectError, ConnectionLost
from forkwire.client.logs import configure_logging
from forkwire.client.profiles.agewords import age_words
from forkwire.client.profiles.spool import (
    FORMATS,
    SeqCounter,
    Spool,
    SpoolEntry,
    SpoolFormat,
    read_counter,
)
from forkwire.protocol import Ack, Error, Reading, ReadingsMsg

log = structlog.get_logger("forkwire.profiles")

LOCALES: Final = ("en_US", "ru_RU")
#: The stream the profiles go to.
SENSOR: Final = "profiles"
#: The three children live for the whole run, so spawn's start-up cost (tens of ms) is
#: paid three times; in exchange each starts from a clean interpreter, not a copy of ours.
START_METHOD: Final = "spawn"

#: A frame of this many records stays far below the server's 1 MiB max_frame (a profile
#: is about 600 bytes of JSON).
DEFAULT_BATCH: Final = 100
#: How long the parent waits for a child beyond its own deadline before killing it.
_GRACE: Final = 15.0


@dataclass(frozen=True, slots=True)
class ProfilesConfig:
    """What to generate, what to keep, where to send it.

    Args:
        count: profiles to generate (>= 1).
        interval: seconds between generated profiles (0: as fast as Faker goes).
        spool: the spool file; None: ``profiles-spool.jsonl`` or ``.pickle``.
        format: ``json`` or ``pickle`` (see :mod:`forkwire.client.profiles.spool`).
        locale: Faker's locale, also the language of the printed ages.
        ages: keep profiles whose age is in ``[low, high]``.
        drain_timeout: once the processor is done, how long the sender may take to
            empty the spool.
        batch: most records per ``readings`` frame.
        backoff_initial, backoff_max: retry delays after a failed send, doubling.
        connect_timeout, ack_timeout: a connection attempt, and the wait for an ack.
        seed: seeds Faker (the same profiles every run).
        log_level: the children's log level (they log to stderr, as the parent does).
    """

    count: int
    interval: float = 0.5
    spool: Path | None = None
    format: SpoolFormat = "json"
    locale: str = "en_US"
    ages: tuple[int, int] = (30, 40)
    host: str = "127.0.0.1"
    port: int = 7700
    drain_timeout: float = 30.0
    batch: int = DEFAULT_BATCH
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    connect_timeout: float = 5.0
    ack_timeout: float = 10.0
    seed: int | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"count must be an int >= 1, got {self.count!r}")
        if not (math.isfinite(self.interval) and self.interval >= 0):
            raise ValueError(f"interval must be >= 0, got {self.interval}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {self.locale!r}")
        low, high = self.ages
        if not 0 <= low <= high:
            raise ValueError(f"ages must be 0 <= low <= high, got {low}-{high}")
        if not self.drain_timeout >= 0:
            raise ValueError(f"drain_timeout must be >= 0, got {self.drain_timeout}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    @property
    def spool_path(self) -> Path:
        """The spool file."""
        if self.spool is not None:
            return self.spool
        return Path("profiles-spool.jsonl" if self.format == "json" else "profiles-spool.pickle")

    @property
    def seq_path(self) -> Path:
        """The seq counter beside the spool."""
        return self.spool_path.with_name(self.spool_path.name + ".seq")


@dataclass(frozen=True, slots=True)
class ProfilesSummary:
    """How a run went.

    ``sent`` records were acked by the server and removed from the spool (including any
    ``resumed`` from an earlier run's spool); ``retried`` records had at least one failed
    send, over ``failures`` failed attempts; ``left`` are still in the spool. ``failed``
    names children that did not end cleanly.
    """

    generated: int
    kept: int
    sent: int
    retried: int
    failures: int
    resumed: int
    left: int
    spool: Path
    interrupted: bool = False
    failed: tuple[str, ...] = ()


def parse_ages(text: str) -> tuple[int, int]:
    """``"30-40"`` to ``(30, 40)``; ``"35"`` to ``(35, 35)``.

    Raises:
        ValueError: not one or two whole numbers >= 0, or low above high.
    """
    low_text, sep, high_text = text.strip().partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if sep else low
    except ValueError:
        raise ValueError(f"ages must be LOW-HIGH in whole years, got {text!r}") from None
    if not 0 <= low <= high:
        raise ValueError(f"ages must be 0 <= LOW <= HIGH, got {text!r}")
    return low, high


def age_on(birthdate: date, today: date) -> int:
    """Whole years from ``birthdate`` to ``today`` (a 29 February birthday turns on 1 March
    in other years)."""
    before_birthday = (today.month, today.day) < (birthdate.month, birthdate.day)
    return today.year - birthdate.year - before_birthday


def jsonable(value: object) -> JsonValue:
    """Faker's values as JSON: dates to ISO strings, ``Decimal`` to float, tuples to lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def sent_line(profile: dict[str, JsonValue], locale: str) -> str:
    """``sent: <full name>, <sex>, <job>, <age in words>``."""
    age = profile.get("age")
    words = age_words(age, locale) if isinstance(age, int) else "? years"
    return f"sent: {profile.get('name')}, {profile.get('sex')}, {profile.get('job')}, {words}"


# --- the children: top-level functions, as the spawn start method needs -----------------


def _child_setup(config: ProfilesConfig) -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(config.log_level)


def generate(config: ProfilesConfig, queue: Any, stop: Any, result: PipeEnd) -> None:
    """The generator process: ``count`` profiles, one every ``interval``, then ``None``."""
    _child_setup(config)
    from faker import Faker  # here, not at import: only this process needs it

    fake = Faker(config.locale)
    if config.seed is not None:
        fake.seed_instance(config.seed)
    made = 0
    started = time.monotonic()
    try:
        for i in range(config.count):
            # A fixed-rate clock of its own: profile i is due at start + i * interval,
            # however long the others take.
            delay = started + i * config.interval - time.monotonic()
            if stop.wait(delay) if delay > 0 else stop.is_set():
                log.info("generator stopped early", made=made)
                break
            queue.put((time.time(), jsonable(fake.profile())))
            made += 1
    finally:
        queue.put(None)
        result.send({"generated": made})
    log.info("generator done", generated=made)


def process(
    config: ProfilesConfig,
    queue: Any,
    lock: Any,
    doorbell: PipeEnd,
    first_seq: int,
    result: PipeEnd,
) -> None:
    """The processor process: keep the profiles in the age range, spool them with a seq."""
    _child_setup(config)
    spool = Spool(config.spool_path, config.format, lock)
    counter = SeqCounter(config.seq_path, first_seq)
    low, high = config.ages
    received = kept = 0
    ringing = True
    try:
        while (item := queue.get()) is not None:
            received += 1
            ts, profile = item
            age = age_on(date.fromisoformat(profile["birthdate"]), date.today())
            if not low <= age <= high:
                continue
            spool.append(SpoolEntry(seq=counter.take(), ts=ts, profile={**profile, "age": age}))
            kept += 1
            if ringing:
                try:
                    doorbell.send_bytes(b"+")
                except OSError:
                    ringing = False  # the sender is gone; the spool keeps the records
    finally:
        result.send({"received": received, "kept": kept})
    log.info("processor done", received=received, kept=kept)


def send(
    config: ProfilesConfig, lock: Any, doorbell: PipeEnd, control: PipeEnd, result: PipeEnd
) -> None:
    """The sender process: empty the spool into the server, a record leaving on its ack."""
    _child_setup(config)
    sender = _Sender(config, Spool(config.spool_path, config.format, lock), doorbell, control)
    try:
        asyncio.run(sender.run())
    finally:
        result.send(
            {"sent": sender.sent, "retried": len(sender.retried), "failures": sender.failures}
        )


class _Sender:
    def __init__(
        self, config: ProfilesConfig, spool: Spool, doorbell: PipeEnd, control: PipeEnd
    ) -> None:
        self.config = config
        self.spool = spool
        self.doorbell = doorbell
        self.control = control
        self.sent = 0
        self.failures = 0
        #: Seqs of records that failed to send at least once.
        self.retried: set[int] = set()
        self.draining = False
        self.stopping = False
        self._ring = asyncio.Event()
        self._connection: Connection | None = None
        self._deadline: asyncio.Timeout | None = None

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
        attempt = 0
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
                acked = await self._send(batch)
            except (ConnectError, ConnectionLost, OSError, TimeoutError) as exc:
                await self._disconnect()
                self.failures += 1
                self.retried.update(entry["seq"] for entry in batch)
                ceiling = min(self.config.backoff_max, self.config.backoff_initial * 2**attempt)
                # Jitter, as in the fleet: clients that failed together do not retry together.
                delay = random.uniform(ceiling / 2, ceiling)
                attempt += 1
                log.warning(
                    "send failed, will retry",
                    reason=str(exc),
                    records=len(batch),
                    retry_in=round(delay, 3),
                )
                # The backoff timer; the stop deadline still cuts it short.
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.spool.remove(acked)
            for entry in batch:
                if entry["seq"] in acked:
                    self.sent += 1
                    print(sent_line(entry["profile"], self.config.locale), flush=True)

    async def _send(self, batch: list[SpoolEntry]) -> set[int]:
        if self._connection is None:
            self._connection = await Connection.open(
                self.config.host,
                self.config.port,
                client="forkwire-profiles",
                connect_timeout=self.config.connect_timeout,
            )
        items = [
            Reading(sensor=SENSOR, seq=entry["seq"], ts=entry["ts"], value=entry["profile"])
            for entry in batch
        ]
        await self._connection.send(ReadingsMsg(items=items))
        async with asyncio.timeout(self.config.ack_timeout):
            while True:
                reply = await self._connection.recv()
                if isinstance(reply, Ack):
                    runs = reply.acked.get(SENSOR, [])
                    return {seq for first, last in runs for seq in range(first, last + 1)}
                if isinstance(reply, Error):
                    raise ConnectionLost(f"server error {reply.code}: {reply.message}")

    async def _disconnect(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


# --- the parent ----------------------------------------------------------------------


def run_profiles(config: ProfilesConfig) -> ProfilesSummary:
    """Run the generator, the processor and the sender to the end; see the module docs.

    A first Ctrl-C stops the run in order (the summary is returned with ``interrupted``);
    a second one kills the children and raises ``KeyboardInterrupt``.

    Raises:
        InputError: the spool or its seq counter cannot be used; checked before any
            process starts.
    """
    spool = Spool(config.spool_path, config.format)
    resumed, cut = spool.repair()
    if cut:
        log.warning("cut a torn record off the spool", spool=str(spool.path), bytes=cut)
    first_seq = max(read_counter(config.seq_path), max((e["seq"] + 1 for e in resumed), default=0))
    if resumed:
        log.info("resuming the spool", records=len(resumed), spool=str(spool.path))

    ctx = multiprocessing.get_context(START_METHOD)
    lock = ctx.Lock()
    queue = ctx.Queue()
    stop = ctx.Event()
    bell_in, bell_out = ctx.Pipe(duplex=False)
    control_in, control_out = ctx.Pipe(duplex=False)
    results = {name: ctx.Pipe(duplex=False) for name in ("generator", "processor", "sender")}
    children = {
        "generator": ctx.Process(
            target=generate,
            args=(config, queue, stop, results["generator"][1]),
            name="profiles-generator",
        ),
        "processor": ctx.Process(
            target=process,
            args=(config, queue, lock, bell_out, first_seq, results["processor"][1]),
            name="profiles-processor",
        ),
        "sender": ctx.Process(
            target=send,
            args=(config, lock, bell_in, control_in, results["sender"][1]),
            name="profiles-sender",
        ),
    }
    interrupted = False
    try:
        for child in children.values():
            child.start()
        # Only the children use these ends; closing ours lets a reader see EOF when its
        # writer dies, and a writer see a broken pipe when its reader does.
        for end in (bell_in, bell_out, control_in, *(w for _, w in results.values())):
            end.close()
        try:
            _shut_down_in_order(config, children, queue, control_out, drain=True)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: stopping the generator and the sender")
            stop.set()
            _order(control_out, "stop")
            _shut_down_in_order(config, children, queue, control_out, drain=False)
    finally:
        for child in children.values():
            if child.is_alive():
                child.kill()
            if child.pid is not None:
                child.join()
        control_out.close()
        queue.close()
        queue.cancel_join_thread()  # a sentinel nobody read must not hold the parent up

    counts: dict[str, int] = {}
    for reader, _ in results.values():
        with contextlib.suppress(EOFError, OSError):
            if reader.poll():
                counts.update(reader.recv())
        reader.close()
    failed = tuple(
        f"{name} exited with {child.exitcode}"
        for name, child in children.items()
        if child.exitcode != 0
    )
    return ProfilesSummary(
        generated=counts.get("generated", 0),
        kept=counts.get("kept", 0),
        sent=counts.get("sent", 0),
        retried=counts.get("retried", 0),
        failures=counts.get("failures", 0),
        resumed=len(resumed),
        left=len(Spool(config.spool_path, config.format).load()),
        spool=config.spool_path,
        interrupted=interrupted,
        failed=failed,
    )


def _shut_down_in_order(
    config: ProfilesConfig,
    children: Mapping[str, multiprocessing.process.BaseProcess],
    queue: Any,
    control: PipeEnd,
    *,
    drain: bool,
) -> None:
    """Generator, then processor, then the sender's drain (or stop, on Ctrl-C)."""
    generator, processor, sender = children["generator"], children["processor"], children["sender"]
    wait_for_any([generator.sentinel, processor.sentinel])
    if generator.is_alive() and not processor.is_alive() and processor.exitcode != 0:
        # The processor died first: nobody reads the queue any more, and a generator
        # whose queue is full cannot even exit (its feeder thread waits to flush).
        log.error("the processor died; stopping the generator", code=processor.exitcode)
        generator.kill()
    generator.join()
    if generator.exitcode != 0 and processor.is_alive():
        queue.put(None)  # it died before its sentinel: the processor must still finish
    processor.join()
    if drain:
        _order(control, "drain")
    sender.join(config.drain_timeout + config.ack_timeout + _GRACE)


def _order(control: PipeEnd, order: str) -> None:
    with contextlib.suppress(OSError):
        control.send(order)
