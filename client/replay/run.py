"""CSV replay: data at rest turned into a stream, one row every interval.

A replay is one sensor on the fleet: its probe returns the next row of the file, so the
rows get the fleet's outbox, its 5-slot network, reconnects and UDP without any code of
their own. When the file runs out (without ``loop``) the probe raises ``StopProbing``;
the fleet then delivers what the sensor stored and returns.

The ``out`` file gets a line for each row at the moment its reading is written to the
outbox: ``seq,ts,<the row's fields>``, written with the ``csv`` module (no header, so
runs can append to one file). That is the moment a row becomes part of the stream: it
has its seq and timestamp, it is on disk, and the fleet delivers it at least once and the
server stores it exactly once, in this run or, after a Ctrl-C, in the next run on the
same outbox. Waiting for the ack instead would make the file a copy of the server's
store, which the store already is; and it would print nothing at all while the server is
away. The summary says how many rows were acked and how many are still in the outbox.
"""

from __future__ import annotations

import asyncio
import csv
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from forkwire.client.connection import DEFAULT_HOST, PLAIN, Credentials
from forkwire.client.errors import InputError
from forkwire.client.logs import get_logger
from forkwire.client.replay.rows import CsvRows, RowProbe
from forkwire.client.sensors.config import FleetConfig
from forkwire.client.sensors.fleet import run_fleet
from forkwire.client.sensors.sensor import PeriodSource, ReadingSink, Sensor
from forkwire.client.transport import Transport
from forkwire.protocol import DEFAULT_PORT, Reading
from forkwire.protocol.messages import SENSOR_PATTERN

log = get_logger("forkwire.replay")

#: The assignment's pace: one record every 1-3 seconds.
DEFAULT_INTERVAL: Final = (1.0, 3.0)

#: With interval 0 the sensor would otherwise race the whole file into the outbox; this
#: bound makes it wait for acks instead, so a fast replay goes at the network's pace.
DEFAULT_BACKLOG: Final = 1000

_NAME: Final = re.compile(SENSOR_PATTERN)
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """What to replay and where.

    Args:
        file: the CSV file; its first row names the columns.
        sensor: the stream's name; None: the file's stem, with characters outside
            ``[A-Za-z0-9_.-]`` replaced by ``_``.
        column: send this column as a number; None: send each row as a record.
        interval: seconds between rows, drawn uniformly from ``[low, high]`` for each
            row; ``(0, 0)`` sends as fast as the network allows.
        loop: start again from the top when the file runs out, forever (seqs go on).
        out: append ``seq,ts,<row>`` here for each row written to the outbox; None: no file.
        seed: seeds the interval draws.
        backlog: the most rows held in the outbox (unacked) before the replay waits.
        Others: as in :class:`forkwire.client.sensors.fleet.FleetConfig`.
    """

    file: Path
    sensor: str | None = None
    column: str | None = None
    interval: tuple[float, float] = DEFAULT_INTERVAL
    loop: bool = False
    out: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: The token and TLS the server asks for.
    credentials: Credentials = PLAIN
    transport: Transport = Transport.tcp
    udp_ack: bool = False
    outbox: str | Path = "forkwire-replay.sqlite"
    seed: int | None = None
    slots: int = 5
    backlog: int = DEFAULT_BACKLOG
    drain_timeout: float = 5.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    connect_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        low, high = self.interval
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
            raise ValueError(f"interval must be 0 <= low <= high, got {low}-{high}")
        if self.sensor is not None and not _NAME.match(self.sensor):
            raise ValueError(f"sensor name must match {SENSOR_PATTERN}, got {self.sensor!r}")
        if self.backlog < 1:
            raise ValueError(f"backlog must be >= 1, got {self.backlog}")

    @property
    def sensor_name(self) -> str:
        """The stream's name: ``sensor``, or one made from the file's stem."""
        if self.sensor is not None:
            return self.sensor
        return _NOT_NAME.sub("_", self.file.stem)[:64] or "replay"


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    """How a replay went.

    ``rows`` were written to the outbox and to ``out`` in this run; ``acked`` of the
    sensor's readings were committed by the server (including any an earlier, interrupted
    run left in the outbox); ``pending`` are still in the outbox. ``passes`` counts the
    starts from the top of the file, and ``exhausted`` says the file ran out (False: the
    replay was stopped or interrupted).
    """

    sensor: str
    rows: int
    skipped: int
    passes: int
    acked: int
    pending: int
    exhausted: bool
    seconds: float
    out: Path | None


class ReplaySensor(Sensor):
    """The replay's one sensor: a :class:`RowProbe`, and a line in ``out`` per stored row."""

    def __init__(
        self, name: str, probe: RowProbe, period: float | PeriodSource, out: TextIO | None
    ) -> None:
        super().__init__(name=name, probe=probe, period=period, kind="replay")
        self.rows_probe = probe
        self.out = out
        #: Rows written to the outbox, and whether the file ran out (StopProbing).
        self.stored = 0
        self.ended = False
        self._writer = csv.writer(out) if out is not None else None

    async def run(
        self, sink: ReadingSink, on_stored: Callable[[Reading], None] | None = None
    ) -> None:
        """Probe until the file runs out (see :meth:`Sensor.run`), recording each row."""

        def stored(reading: Reading) -> None:
            self._record(reading)
            if on_stored is not None:
                on_stored(reading)

        await super().run(sink, stored)
        self.ended = True  # only a StopProbing returns; a stop cancels

    def _record(self, reading: Reading) -> None:
        # The probe and the store run back to back on one task, so the probe's current
        # row is the row of this reading.
        self.stored += 1
        if self._writer is not None and self.out is not None:
            self._writer.writerow([reading.seq, f"{reading.ts:.6f}", *self.rows_probe.current])
            # A line per row, whole, even if the process dies right after.
            self.out.flush()


def interval_source(interval: tuple[float, float], seed: int | None) -> float | PeriodSource:
    """A sensor period for an interval: a constant, or a fresh uniform draw per row."""
    low, high = interval
    if high == 0:
        return lambda: 0.0
    if low == high:
        return low
    rng = random.Random(seed)
    return lambda: rng.uniform(low, high)


async def run_replay(config: ReplayConfig, *, stop: asyncio.Event | None = None) -> ReplaySummary:
    """Replay ``config.file`` to the server until it runs out, ``stop`` is set, or the task
    is cancelled (Ctrl-C); unsent rows stay in the outbox.

    Raises:
        InputError: the file cannot be replayed (unreadable, empty, no such column), or
            ``out`` cannot be written; checked before anything is sent.
        ValueError: a bad sensor name or config.
    """
    started = time.monotonic()
    name = config.sensor_name
    if not _NAME.match(name):
        raise ValueError(f"sensor name must match {SENSOR_PATTERN}, got {name!r}")
    rows = CsvRows(config.file, column=config.column, loop=config.loop)
    try:
        out = _open_out(config.out)
        try:
            probe = RowProbe(rows, config.column)
            sensor = ReplaySensor(name, probe, interval_source(config.interval, config.seed), out)
            fleet = FleetConfig(
                host=config.host,
                port=config.port,
                credentials=config.credentials,
                slots=config.slots,
                outbox=config.outbox,
                outbox_max=config.backlog,
                outbox_policy="block",
                transport=config.transport,
                udp_ack=config.udp_ack,
                drain_timeout=config.drain_timeout,
                backoff_initial=config.backoff_initial,
                backoff_max=config.backoff_max,
                connect_timeout=config.connect_timeout,
            )
            log.info("replay started", file=str(config.file), sensor=name, column=config.column)
            summary = await run_fleet(fleet, sensors=[sensor], stop=stop)
        finally:
            if out is not None:
                out.close()
    finally:
        rows.close()
    stats = summary.sensors[0]
    return ReplaySummary(
        sensor=name,
        rows=sensor.stored,
        skipped=probe.skipped,
        passes=rows.passes,
        acked=stats.acked,
        pending=stats.pending,
        exhausted=sensor.ended,
        seconds=time.monotonic() - started,
        out=config.out,
    )


def _open_out(path: Path | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return path.open("a", encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
