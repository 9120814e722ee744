"""``forkwire demo``: the same readings over TCP and over UDP, and exactly what each lost.

For every offered rate and both transports one sender streams ``count`` readings of one
sensor (seqs ``0..count-1``), paced in small bursts. TCP sends acked ``readings`` frames
through a bounded window, so TCP's flow control holds the sender back and nothing is lost;
UDP sends one fire-and-forget ``reading`` per datagram, so whatever the receiver cannot
take is dropped. After each run the demo waits until the server has stored everything it
will store, reads back what it stored, and counts, from the seqs:

- ``lost = sent - stored`` exactly, where ``sent`` counts every seq the sender issued
  (a reading the noise stage dropped keeps its seq, so the consumer sees the gap);
- ``out_of_order``: stored readings whose arrival (``received_at``, ties by rowid) comes
  after a higher seq;
- ``duplicates``: the server's ``readings_duplicate`` counter over the run;
- latency ``received_at - ts`` (p50, p99) and RFC 3550 interarrival jitter over the same
  transit times. ``ts`` is the client's send time and ``received_at`` is the time the
  server handed the reading's group-commit batch to storage, both on this machine's clock,
  so latency includes the wait for the commit (up to the server's commit interval, 50 ms
  by default);
- ``kernel_drops`` (UDP only): the growth of the kernel's ``RcvbufErrors`` counter, which
  is host-wide, so other programs' drops during the run count too.

Every lost reading is attributed: to the noise stage (counted by the client), to the
kernel's receive buffer (``kernel_drops``, capped at what is left), or elsewhere.

Against an external server (``host``/``port`` given) the stored readings cannot be read
back row by row: the demo uses the ``report`` request for the stored count, and leaves
``out_of_order``, ``jitter_ms``, ``p50_ms`` and ``p99_ms`` null.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import secrets
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeVar

from client.connection import Connection, describe_error
from client.noise import Chain, parse_noise
from client.udp import UdpConnection
from protocol import (
    Ack,
    Error,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Report,
    ReportResult,
    Stats,
    StatsResult,
    pack,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from rich.console import Console
    from rich.table import Table

#: An offered rate in readings per second, or ``"max"``: as fast as the sender can go.
Rate: TypeAlias = int | float | Literal["max"]
Transport: TypeAlias = Literal["tcp", "udp"]
_TRANSPORTS: Final[tuple[Transport, ...]] = ("tcp", "udp")
_T = TypeVar("_T")

DEFAULT_RATES: Final[tuple[Rate, ...]] = (1000, 5000, 20_000, 50_000, 100_000, "max")
QUICK_RATES: Final[tuple[Rate, ...]] = (1000, 20_000, "max")
DEFAULT_COUNT: Final = 20_000
QUICK_COUNT: Final = 5_000
#: The original brief's noise: drop one reading every X seconds, X uniform in [2, 3].
DEFAULT_NOISE: Final = "dropout:2-3"
DEFAULT_NOISE_RATE: Final = 200.0
DEFAULT_NOISE_SECONDS: Final = 10.0
QUICK_NOISE_SECONDS: Final = 5.0
#: Readings per TCP ``readings`` frame.
DEFAULT_TCP_BATCH: Final = 100
#: Unacked TCP frames at once. The window must hold more readings than the server's
#: group-commit batch (1,000 by default): with fewer, no batch ever fills and every commit
#: waits out the commit interval, which caps TCP at window / interval readings per second.
DEFAULT_TCP_WINDOW: Final = 32
REFERENCE_LABEL: Final = "kernel path, C receiver"

#: The pacer wakes at most this often and sends every reading that has become due; a
#: sleep per reading would cost more than the sending at 100,000/s.
_TICK: Final = 0.002
#: A UDP burst yields to the event loop after this many datagrams.
_UDP_YIELD_EVERY: Final = 256
#: The server has stored all it will once its counters stood still this long.
_SETTLE_QUIET: Final = 0.5
_SETTLE_POLL: Final = 0.05
#: RFC 3550 section 6.4.1: the jitter estimate moves 1/16 of the way to each new |D|.
_JITTER_GAIN: Final = 1 / 16
_SERVER_START_TIMEOUT: Final = 30.0
_SERVER_STOP_TIMEOUT: Final = 10.0
_ACK_TIMEOUT: Final = 60.0
_IPERF_MAX_SECONDS: Final = 10


class DemoError(Exception):
    """The demo could not run: its server did not start, or a run failed midway."""


# --- pure metrics ------------------------------------------------------------------------


def rfc3550_jitter(transits: Sequence[float]) -> float | None:
    """Interarrival jitter (RFC 3550, 6.4.1) of transit times given in arrival order.

    ``D`` is the difference of consecutive transit times and ``J += (|D| - J) / 16``,
    starting from 0. The result is in the unit of ``transits``; None with fewer than two.
    """
    if len(transits) < 2:
        return None
    jitter = 0.0
    previous = transits[0]
    for transit in transits[1:]:
        jitter += (abs(transit - previous) - jitter) * _JITTER_GAIN
        previous = transit
    return jitter


def count_out_of_order(seqs: Sequence[int]) -> int:
    """Readings that arrived after a reading with a higher seq (``seqs`` in arrival order)."""
    late = 0
    highest = -1
    for seq in seqs:
        if seq < highest:
            late += 1
        else:
            highest = seq
    return late


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating linearly between closest ranks.

    The same definition as numpy's default (``method="linear"``). None for no values.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def attribute_loss(lost: int, noise: int, kernel: int | None) -> tuple[int, int, int]:
    """Split ``lost`` into (noise, kernel buffer, elsewhere), in that order of blame.

    The noise count is exact (the client dropped those itself); kernel drops are host-wide,
    so they are capped at what the noise does not explain; the rest is "elsewhere".
    """
    by_noise = min(max(noise, 0), max(lost, 0))
    by_kernel = min(max(kernel or 0, 0), max(lost - by_noise, 0))
    return by_noise, by_kernel, max(lost - by_noise - by_kernel, 0)


def parse_rates(text: str) -> tuple[Rate, ...]:
    """Parse ``"1000,5000,max"`` into rates, for a command line.

    Raises:
        ValueError: an empty list, or an item that is neither a positive number nor ``max``.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"no rates in {text!r}; give e.g. 1000,20000,max")
    rates: list[Rate] = []
    for item in items:
        if item.lower() == "max":
            rates.append("max")
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"bad rate {item!r}: give readings per second, or 'max'") from None
        rates.append(_normalise_rate(value))
    return tuple(rates)


def _normalise_rate(rate: object) -> Rate:
    if isinstance(rate, str) and rate.strip().lower() == "max":
        return "max"
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"bad rate {rate!r}: give readings per second, or 'max'")
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"bad rate {rate!r}: must be a positive, finite number of readings/s")
    return int(rate) if float(rate).is_integer() else float(rate)


# --- configuration and results -----------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """What the demo measures and where.

    Args:
        host, port: an external server to measure. With ``port`` None (the default) the
            demo starts its own server subprocess on 127.0.0.1 with a SQLite store. ``host``
            defaults to 127.0.0.1 when only ``port`` is given.
        udp_port: the external server's UDP port (default: ``port``).
        rates: offered rates, readings/s or ``"max"`` (default: 1k, 5k, 20k, 50k, 100k, max;
            quick: 1k, 20k, max).
        count: readings per run (default 20,000; quick 5,000).
        quick: fewer rates, fewer readings, shorter noise runs (under a minute in all).
        out_dir: where ``demo.json`` and ``demo.png`` go (default: the current directory).
        seed: seeds the noise stage, so the noise runs draw the same intervals.
        noise: the noise spec of the extra pair of runs (``client.noise`` syntax); None
            skips them.
        noise_rate, noise_seconds: the pace and length of the noise runs (default 200/s
            for 10 s; quick 5 s).
        udp_rcvbuf: SO_RCVBUF for the demo's own server (the kernel may grant less).
        db_path: where the own server's SQLite file goes (default: a temporary file that is
            deleted at the end).
        tcp_batch, tcp_window: readings per TCP frame, unacked frames at once.
        iperf: run the iperf3 reference when ``iperf3`` is on PATH.
        settle_timeout: the longest wait, per run, for the server to store what it got.
        progress: called with one line per step.
        console: where the results table is printed (None: not printed).
    """

    host: str | None = None
    port: int | None = None
    udp_port: int | None = None
    rates: Sequence[Rate] | None = None
    count: int | None = None
    quick: bool = False
    out_dir: Path | None = None
    seed: int = 0
    noise: str | None = DEFAULT_NOISE
    noise_rate: float = DEFAULT_NOISE_RATE
    noise_seconds: float | None = None
    udp_rcvbuf: int | None = None
    db_path: Path | None = None
    tcp_batch: int = DEFAULT_TCP_BATCH
    tcp_window: int = DEFAULT_TCP_WINDOW
    iperf: bool = True
    settle_timeout: float = 15.0
    progress: Callable[[str], None] | None = None
    console: Console | None = None

    def __post_init__(self) -> None:
        if self.host is not None and self.port is None:
            raise ValueError(
                "a host needs a port: give both to measure an external server, "
                "or neither to let the demo start its own"
            )
        for name in ("port", "udp_port"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 65535:
                raise ValueError(f"{name} must be in 1..65535, got {value}")
        if self.udp_port is not None and self.port is None:
            raise ValueError("udp_port applies to an external server only: give port too")
        if self.port is not None:
            for name in ("udp_rcvbuf", "db_path"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to the demo's own server, not to host:port")
        if self.rates is not None:
            if isinstance(self.rates, str) or not self.rates:
                raise ValueError("rates must be a non-empty list of readings/s or 'max'")
            rates = tuple(_normalise_rate(rate) for rate in self.rates)
            if len(set(rates)) != len(rates):
                raise ValueError(f"rates must not repeat, got {list(rates)}")
            object.__setattr__(self, "rates", rates)
        if self.count is not None and not 1 <= self.count <= 10_000_000:
            raise ValueError(f"count must be in 1..10,000,000, got {self.count}")
        if self.noise is not None:
            parse_noise([self.noise], seed=self.seed)  # raises ValueError naming the spec
        if not (math.isfinite(self.noise_rate) and self.noise_rate > 0):
            raise ValueError(f"noise_rate must be a positive number, got {self.noise_rate}")
        if self.noise_seconds is not None and not (
            math.isfinite(self.noise_seconds) and self.noise_seconds > 0
        ):
            raise ValueError(f"noise_seconds must be positive, got {self.noise_seconds}")
        if self.udp_rcvbuf is not None and self.udp_rcvbuf < 1024:
            raise ValueError(f"udp_rcvbuf must be at least 1024 bytes, got {self.udp_rcvbuf}")
        if not 1 <= self.tcp_batch <= 10_000:
            raise ValueError(f"tcp_batch must be in 1..10,000, got {self.tcp_batch}")
        if self.tcp_window < 1:
            raise ValueError(f"tcp_window must be at least 1, got {self.tcp_window}")
        if not self.settle_timeout > 0:
            raise ValueError(f"settle_timeout must be positive, got {self.settle_timeout}")
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"out_dir {self.out_dir} exists and is not a directory")

    @property
    def run_rates(self) -> tuple[Rate, ...]:
        """The rates measured."""
        if self.rates is not None:
            return tuple(self.rates)
        return QUICK_RATES if self.quick else DEFAULT_RATES

    @property
    def run_count(self) -> int:
        """Readings per rate run."""
        if self.count is not None:
            return self.count
        return QUICK_COUNT if self.quick else DEFAULT_COUNT

    @property
    def noise_count(self) -> int:
        """Readings per noise run."""
        seconds = self.noise_seconds
        if seconds is None:
            seconds = QUICK_NOISE_SECONDS if self.quick else DEFAULT_NOISE_SECONDS
        return max(1, round(self.noise_rate * seconds))


@dataclass
class RunResult:
    """One sender's run over one transport: what it sent and what the server stored."""

    transport: Transport
    offered_rate: Rate
    #: The noise spec of a noise run, None for a clean run.
    noise: str | None
    sensor: str
    #: Seqs the sender issued, including those the noise stage dropped before the wire.
    sent: int
    stored: int
    lost: int
    loss_pct: float
    out_of_order: int | None
    duplicates: int | None
    jitter_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    achieved_rate: float | None
    #: UDP only: growth of the host-wide kernel ``RcvbufErrors`` during the run.
    kernel_drops: int | None
    noise_dropped: int
    lost_noise: int
    lost_kernel: int
    lost_elsewhere: int
    #: Readings the server process parsed during the run (its ``readings_received``).
    server_received: int | None
    #: From the first send to the last handed to the transport (achieved_rate's divisor).
    send_seconds: float
    #: TCP: from the first send to the last ack (None for UDP, which has no acks).
    acked_seconds: float | None
    #: False when the server's counters still moved at ``settle_timeout``.
    settled: bool
    #: The seqs the noise stage dropped (they are the gaps a consumer sees).
    noise_seqs: list[int] = field(default_factory=list)


@dataclass
class DemoResult:
    """All runs, the iperf3 reference, and where the files went."""

    runs: list[RunResult]
    #: iperf3 over loopback UDP at the same packet rates and sizes; [] without iperf3.
    reference: list[dict[str, Any]]
    notes: list[str]
    json_path: Path
    png_path: Path
    #: ``"own"`` (a subprocess with SQLite) or ``"host:port"``.
    server: str
    #: SO_RCVBUF of the server's UDP socket as granted by the kernel, when it says.
    udp_rcvbuf: int | None
    datagram_bytes: int

    def to_json(self) -> dict[str, Any]:
        """The content of ``demo.json``."""
        return {
            "runs": [dataclasses.asdict(run) for run in self.runs],
            "reference": self.reference,
            "notes": self.notes,
            "server": self.server,
            "udp_rcvbuf": self.udp_rcvbuf,
            "datagram_bytes": self.datagram_bytes,
        }


# --- the run -----------------------------------------------------------------------------


def run_demo_sync(config: DemoConfig) -> DemoResult:
    """:func:`run_demo` in a fresh event loop, for a synchronous caller (the CLI)."""
    return asyncio.run(run_demo(config))


async def run_demo(config: DemoConfig) -> DemoResult:
    """Run every rate over TCP and UDP, then the noise pair; write demo.json and demo.png.

    Raises:
        ConnectError: the external server cannot be reached (``client.connection``).
        DemoError: the own server did not start, or a run failed (acks timed out, the
            server refused readings).
    """
    out_dir = config.out_dir if config.out_dir is not None else Path.cwd()
    out_dir.mkdir(parents=True, exist_ok=True)
    say = config.progress or (lambda _line: None)
    notes: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        if config.port is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fw-demo-")))
            db_path = config.db_path if config.db_path is not None else workdir / "demo.sqlite"
            server = await _DemoServer.start(db_path.resolve(), config.udp_rcvbuf, workdir)
            stack.push_async_callback(server.stop)
            host, port, udp_port = "127.0.0.1", server.port, server.udp_port
            store: Path | None = db_path.resolve()
            server_name = "own"
            say(f"server started on 127.0.0.1:{port} (pid {server.pid}, sqlite {db_path})")
        else:
            host = config.host or "127.0.0.1"
            port = config.port
            udp_port = config.udp_port or port
            store = None
            server_name = f"{host}:{port}"
            notes.append(
                "external server: stored counts come from the report request; "
                "out_of_order, jitter and latency need the rows and are null"
            )
        control = await Connection.open(host, port, client="forkwire-demo")
        stack.push_async_callback(control.close)
        udp = await UdpConnection.open(host, udp_port)
        stack.callback(udp.close)
        await udp.hello()  # fail early if nothing answers over UDP
        measurer = _Measurer(config, host, port, udp, control, store, say)
        first = await _stats(control)
        rcvbuf = _int_or_none(first.get("udp_rcvbuf"))

        runs: list[RunResult] = []
        for rate in config.run_rates:
            for transport in _TRANSPORTS:
                runs.append(await measurer.run(transport, rate, config.run_count, None))
        if config.noise is not None:
            noise_rate = _normalise_rate(config.noise_rate)
            for transport in _TRANSPORTS:
                runs.append(
                    await measurer.run(transport, noise_rate, config.noise_count, config.noise)
                )
        if config.port is None:
            notes.extend(server.warnings)

    reference: list[dict[str, Any]] = []
    iperf = shutil.which("iperf3") if config.iperf else None
    if iperf is None:
        notes.append(
            "iperf3 not on PATH: no kernel-path reference"
            if config.iperf
            else "iperf3 reference not asked for"
        )
    else:
        reference = await _iperf_reference(iperf, config, measurer.datagram_bytes, say)
    notes.append(
        "latency = server commit time - client send time (includes the group-commit wait); "
        "kernel drops = host-wide UDP RcvbufErrors growth"
    )

    result = DemoResult(
        runs=runs,
        reference=reference,
        notes=notes,
        json_path=out_dir / "demo.json",
        png_path=out_dir / "demo.png",
        server=server_name,
        udp_rcvbuf=rcvbuf,
        datagram_bytes=measurer.datagram_bytes,
    )
    result.json_path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    await asyncio.to_thread(plot_demo, result, result.png_path)
    say(f"wrote {result.json_path} and {result.png_path}")
    if config.console is not None:
        config.console.print(render_table(result))
    return result


@dataclass
class _Sent:
    """What a sender did: seqs issued, seqs the noise dropped, and for how long."""

    issued: int
    noise_seqs: list[int]
    seconds: float
    #: TCP: from the first send to the last ack.
    acked_seconds: float | None = None


class _Measurer:
    """Runs one sender at a time and measures what the server stored of it."""

    def __init__(
        self,
        config: DemoConfig,
        host: str,
        port: int,
        udp: UdpConnection,
        control: Connection,
        store: Path | None,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.udp = udp
        self.control = control
        self.store = store
        self.say = say
        #: Keeps sensor names unique across demos against one store (an external server).
        self.token = secrets.token_hex(3)
        #: The size of a typical reading datagram; the iperf3 reference sends this size.
        self.datagram_bytes = len(
            pack(
                ReadingMsg(
                    sensor="demo-udp-100000-abcdef",
                    seq=10_000,
                    ts=time.time(),
                    value=10_000,
                    ack=False,
                )
            )
        )

    async def run(
        self, transport: Transport, rate: Rate, count: int, noise_spec: str | None
    ) -> RunResult:
        label = f"noise-{rate}" if noise_spec else str(rate)
        sensor = f"demo-{transport}-{label}-{self.token}"
        chain = parse_noise([noise_spec], seed=self.config.seed) if noise_spec else None
        shown = f"{rate:,}/s" if rate != "max" else "max rate"
        self.say(
            f"{transport} {shown}: {count:,} readings" + (f", noise {noise_spec}" if chain else "")
        )
        before = await _stats(self.control)
        per_second = None if rate == "max" else float(rate)
        if transport == "tcp":
            sent = await _send_tcp(
                self.host,
                self.port,
                sensor,
                per_second,
                count,
                chain,
                self.config.tcp_batch,
                self.config.tcp_window,
            )
        else:
            sent = await _send_udp(self.udp, sensor, per_second, count, chain)
        after, settled = await _settle(self.control, self.config.settle_timeout)
        if self.store is not None:
            rows = await asyncio.to_thread(_load_rows, self.store, sensor)
            stored = len(rows)
            seqs = [row[0] for row in rows]
            transits_ms = [(received - ts) * 1000 for _seq, ts, received in rows]
            out_of_order: int | None = count_out_of_order(seqs)
            jitter = rfc3550_jitter(transits_ms)
            p50 = percentile(transits_ms, 50)
            p99 = percentile(transits_ms, 99)
            outside = [seq for seq in seqs if not 0 <= seq < sent.issued]
            if outside:
                raise DemoError(
                    f"{sensor}: stored seqs outside 0..{sent.issued - 1}: {outside[:5]}"
                )
        else:
            stored = await _reported_count(self.control, sensor)
            out_of_order = jitter = p50 = p99 = None
        lost = sent.issued - stored
        noise_dropped = len(sent.noise_seqs)
        kernel = _delta(before, after, "kernel_udp_rcvbuferrors") if transport == "udp" else None
        by_noise, by_kernel, elsewhere = attribute_loss(lost, noise_dropped, kernel)
        result = RunResult(
            transport=transport,
            offered_rate=rate,
            noise=noise_spec,
            sensor=sensor,
            sent=sent.issued,
            stored=stored,
            lost=lost,
            loss_pct=round(100 * lost / sent.issued, 4),
            out_of_order=out_of_order,
            duplicates=_delta(before, after, "readings_duplicate"),
            jitter_ms=_rounded(jitter, 3),
            p50_ms=_rounded(p50, 3),
            p99_ms=_rounded(p99, 3),
            achieved_rate=round(sent.issued / sent.seconds, 1) if sent.seconds > 0 else None,
            kernel_drops=kernel,
            noise_dropped=noise_dropped,
            lost_noise=by_noise,
            lost_kernel=by_kernel,
            lost_elsewhere=elsewhere,
            server_received=_delta(before, after, "readings_received"),
            send_seconds=round(sent.seconds, 4),
            acked_seconds=_rounded(sent.acked_seconds, 4),
            settled=settled,
            noise_seqs=sent.noise_seqs,
        )
        self.say(
            f"  stored {stored:,}, lost {lost:,} ({result.loss_pct:g} %), "
            f"achieved {result.achieved_rate or 0:,.0f}/s"
            + ("" if settled else " (server still busy at the settle timeout)")
        )
        return result


async def _pace(
    per_second: float | None, count: int, emit: Callable[[int, int], Awaitable[None]]
) -> float:
    """Call ``emit(first_seq, n)`` with every seq as it falls due; return the seconds taken.

    Without a rate everything is due at once, and ``emit`` itself yields as it goes.
    """
    start = time.perf_counter()
    next_seq = 0
    while next_seq < count:
        if per_second is None:
            due = count
        else:
            due = min(count, int((time.perf_counter() - start) * per_second) + 1)
        if due > next_seq:
            await emit(next_seq, due - next_seq)
            next_seq = due
        if next_seq < count and per_second is not None:
            wait = next_seq / per_second - (time.perf_counter() - start)
            await asyncio.sleep(max(wait, _TICK))
    return time.perf_counter() - start


async def _send_udp(
    udp: UdpConnection, sensor: str, per_second: float | None, count: int, chain: Chain | None
) -> _Sent:
    dropped: list[int] = []

    async def emit(first: int, n: int) -> None:
        for index, seq in enumerate(range(first, first + n)):
            if chain is not None and not chain(seq):
                dropped.append(seq)
                continue
            udp.send(ReadingMsg(sensor=sensor, seq=seq, ts=time.time(), value=seq, ack=False))
            if index % _UDP_YIELD_EVERY == _UDP_YIELD_EVERY - 1:
                await asyncio.sleep(0)

    seconds = await _pace(per_second, count, emit)
    return _Sent(count, dropped, seconds)


class _TcpSender:
    """Acked ``readings`` frames with at most ``window`` of them unanswered."""

    def __init__(self, connection: Connection, sensor: str, window: int) -> None:
        self.connection = connection
        self.sensor = sensor
        self.frames = 0
        self.replies = 0
        self.acked = 0
        self._window = asyncio.Semaphore(window)
        self.caught_up = asyncio.Event()
        self.caught_up.set()

    async def send(self, seqs: range, chain: Chain | None, dropped: list[int]) -> None:
        """Send the seqs the noise keeps as one frame, once the window has room."""
        # Take the slot before the noise and the ts: both belong to the moment of sending,
        # and the time spent waiting for the window is the sender's, not the network's.
        await self._window.acquire()
        kept: list[int] = []
        for seq in seqs:
            if chain is None or chain(seq):
                kept.append(seq)
            else:
                dropped.append(seq)
        if not kept:
            self._window.release()
            return
        items = [Reading(sensor=self.sensor, seq=seq, ts=time.time(), value=seq) for seq in kept]
        self.frames += 1
        self.caught_up.clear()
        await self.connection.send(ReadingsMsg(items=items, ack=True))

    async def read_replies(self) -> None:
        """Release a window slot per ack; never returns (cancel it)."""
        while True:
            reply = await self.connection.recv()
            if isinstance(reply, Error):
                raise DemoError(f"the server refused readings: {describe_error(reply)}")
            if not isinstance(reply, Ack):
                continue
            self.acked += sum(last - first + 1 for first, last in reply.acked.get(self.sensor, []))
            self.replies += 1
            self._window.release()
            if self.replies == self.frames:
                self.caught_up.set()


async def _send_tcp(
    host: str,
    port: int,
    sensor: str,
    per_second: float | None,
    count: int,
    chain: Chain | None,
    batch: int,
    window: int,
) -> _Sent:
    connection = await Connection.open(host, port, client="forkwire-demo")
    async with connection:
        sender = _TcpSender(connection, sensor, window)
        dropped: list[int] = []

        async def emit(first: int, n: int) -> None:
            for start in range(first, first + n, batch):
                await sender.send(range(start, min(start + batch, first + n)), chain, dropped)

        reader = asyncio.create_task(sender.read_replies())
        started = time.perf_counter()
        try:
            seconds = await _watched(_pace(per_second, count, emit), reader, None)
            await _watched(sender.caught_up.wait(), reader, _ACK_TIMEOUT)
            acked_seconds = time.perf_counter() - started
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await connection.goodbye(wait=5.0)
    on_wire = count - len(dropped)
    if sender.acked != on_wire:
        raise DemoError(f"{sensor}: {on_wire} readings sent over TCP but {sender.acked} acked")
    return _Sent(count, dropped, seconds, acked_seconds)


async def _watched(work: Awaitable[_T], watchdog: asyncio.Task[None], limit: float | None) -> _T:
    """Await ``work`` unless ``watchdog`` fails first (its error is raised) or time runs out."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait(
            {task, watchdog}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        if watchdog in done:
            watchdog.result()
            raise DemoError("the TCP connection stopped answering")
        raise DemoError(f"no ack for {limit:.0f} s")
    finally:
        task.cancel()


async def _settle(control: Connection, patience: float) -> tuple[dict[str, int | float], bool]:
    """Poll ``stats`` until the server has stored all it will; return the last counters.

    Settled means: no reading or datagram arrived for ``_SETTLE_QUIET`` seconds, nothing
    waits for a commit, and every reading received is stored or counted as a duplicate.
    A datagram still in the kernel's buffer would move ``udp_datagrams_received`` within
    the quiet time; one the kernel dropped never will. The wait is bounded by ``patience``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    last: tuple[object, ...] | None = None
    still_since = loop.time()
    while True:
        counters = await _stats(control)
        now = loop.time()
        moving = tuple(
            counters.get(name)
            for name in ("readings_received", "udp_datagrams_received", "readings_stored")
        )
        if moving != last:
            last, still_since = moving, now
        in_flight = (
            counters.get("readings_received", 0)
            - counters.get("readings_stored", 0)
            - counters.get("readings_duplicate", 0)
        )
        idle = counters.get("writer_queue_depth", 0) == 0 and in_flight <= 0
        if idle and now - still_since >= _SETTLE_QUIET:
            return counters, True
        if now >= deadline:
            return counters, False
        await asyncio.sleep(_SETTLE_POLL)


async def _stats(control: Connection) -> dict[str, int | float]:
    reply = await control.request(Stats())
    if not isinstance(reply, StatsResult):
        raise DemoError(f"stats answered with {reply.type!r}")
    return dict(reply.counters)


async def _reported_count(control: Connection, sensor: str) -> int:
    """How many readings of ``sensor`` the server stored, from its ``report``."""
    reply = await control.request(Report(sensors=[sensor]))
    if isinstance(reply, Error):
        raise DemoError(f"the report request failed: {describe_error(reply)}")
    if not isinstance(reply, ReportResult):
        raise DemoError(f"report answered with {reply.type!r}")
    sensors = reply.report.get("sensors")
    entry = sensors.get(sensor) if isinstance(sensors, dict) else None
    count = entry.get("count") if isinstance(entry, dict) else 0
    return count if isinstance(count, int) else 0


def _load_rows(db: Path, sensor: str) -> list[tuple[int, float, float]]:
    """``(seq, ts, received_at)`` of a sensor's stored readings, in arrival order."""
    with contextlib.closing(sqlite3.connect(db, timeout=10.0)) as connection:
        rows = connection.execute(
            "SELECT seq, ts, received_at FROM readings WHERE sensor = ? "
            "ORDER BY received_at, rowid",
            (sensor,),
        ).fetchall()
    return [(int(seq), float(ts), float(received)) for seq, ts, received in rows]


def _delta(before: dict[str, int | float], after: dict[str, int | float], name: str) -> int | None:
    # The server's counters appear on first use: absent before means 0; absent after means
    # the server does not have that counter (no /proc/net/snmp, an older server).
    if name not in after or (name.startswith("kernel_") and name not in before):
        return None
    return int(after[name] - before.get(name, 0))


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# --- the own server ----------------------------------------------------------------------


class _DemoServer:
    """``python -m server`` on a free port, its stderr drained, stopped with SIGTERM."""

    def __init__(self, proc: asyncio.subprocess.Process, started: dict[str, Any]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = int(started["port"])
        self.udp_port = int(started.get("udp_port") or self.port)
        #: Warnings and errors the server logged, one JSON line each, for the notes.
        self.warnings: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, db: Path, rcvbuf: int | None, workdir: Path) -> _DemoServer:
        """Start the server and wait for its ``server_started`` event.

        Raises:
            DemoError: it exited or stayed silent for ``_SERVER_START_TIMEOUT`` seconds.
        """
        args = ["--host", "127.0.0.1", "--port", "0", "--log-format", "json"]
        args += ["--db", f"sqlite:///{db}"]
        if rcvbuf is not None:
            args += ["--udp-rcvbuf", str(rcvbuf)]
        # cwd is a scratch folder: ``-m server`` must not pick up a ``server/`` folder that
        # happens to sit in the user's current directory.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
        )
        lines: deque[str] = deque(maxlen=10)
        try:
            started = await asyncio.wait_for(_until_started(proc, lines), _SERVER_START_TIMEOUT)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError | DemoError):
                said = " | ".join(lines) or "nothing"
                raise DemoError(f"the demo's server did not start; it said: {said}") from None
            raise
        server = cls(proc, started)
        server._drain = asyncio.create_task(server._drain_stderr())
        return server

    async def _drain_stderr(self) -> None:
        # A full pipe would block the server's logging, and with it the server.
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("level") in ("warning", "error"):
                    self.warnings.append(f"server {event['level']}: {line.decode().strip()}")

    async def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), _SERVER_STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._drain, 5.0)


async def _until_started(proc: asyncio.subprocess.Process, lines: deque[str]) -> dict[str, Any]:
    assert proc.stderr is not None
    while line := await proc.stderr.readline():
        text = line.decode(errors="replace").strip()
        lines.append(text)
        try:
            event = json.loads(text)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "server_started":
            return event
    raise DemoError("the server exited")


# --- the iperf3 reference ----------------------------------------------------------------


async def _iperf_reference(
    iperf: str, config: DemoConfig, packet_bytes: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """iperf3 over loopback UDP at each rate, with our datagram size: loss on the kernel
    path to a C receiver, which shows how much of UDP's loss is the receiver's speed."""
    longest = 2 if config.quick else _IPERF_MAX_SECONDS
    rows: list[dict[str, Any]] = []
    for rate in config.run_rates:
        if rate == "max":
            seconds, bits = 1, 0  # iperf3: -b 0 is unlimited
        else:
            seconds = min(longest, max(1, math.ceil(config.run_count / rate)))
            bits = math.ceil(rate * packet_bytes * 8)
        say(f"iperf3 udp {rate}{'' if rate == 'max' else '/s'}: {seconds} s")
        rows.append(await _iperf_run(iperf, rate, bits, packet_bytes, seconds))
    return rows


async def _iperf_run(
    iperf: str, rate: Rate, bits: int, packet_bytes: int, seconds: int
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": REFERENCE_LABEL,
        "tool": "iperf3",
        "transport": "udp",
        "offered_rate": rate,
        "packet_bytes": packet_bytes,
        "seconds": seconds,
        "sent": None,
        "lost": None,
        "loss_pct": None,
        "jitter_ms": None,
        "achieved_rate": None,
        "error": None,
    }
    port = _free_port()
    quiet = asyncio.subprocess.DEVNULL
    server = await asyncio.create_subprocess_exec(
        iperf, "-s", "-1", "-p", str(port), stdin=quiet, stdout=quiet, stderr=quiet
    )
    try:
        data: dict[str, Any] = {}
        # The server needs a moment to listen; a refused client does not use up its -1.
        for _attempt in range(50):
            client = await asyncio.create_subprocess_exec(
                iperf, "-c", "127.0.0.1", "-u", "-b", str(bits), "-l", str(packet_bytes),
                "-t", str(seconds), "-J", "-p", str(port),
                stdin=quiet, stdout=asyncio.subprocess.PIPE, stderr=quiet,
            )  # fmt: skip
            try:
                out, _ = await asyncio.wait_for(client.communicate(), seconds + 15)
            except TimeoutError:
                client.kill()
                await client.wait()
                row["error"] = "iperf3 client timed out"
                return row
            try:
                data = json.loads(out)
            except ValueError:
                data = {"error": out.decode(errors="replace").strip()[:200] or "no output"}
            error = str(data.get("error") or "")
            if "connect" in error.lower() and server.returncode is None:
                await asyncio.sleep(0.1)
                continue
            break
        if data.get("error"):
            row["error"] = str(data["error"])
            return row
        end = data.get("end", {})
        # Newer iperf3 names the receiver's side; older ones put it in "sum".
        summary = end.get("sum_received") or end.get("sum") or {}
        packets, lost = summary.get("packets"), summary.get("lost_packets")
        if not isinstance(packets, int) or not isinstance(lost, int):
            row["error"] = "no packet counts in iperf3's output"
            return row
        span = summary.get("seconds") or seconds
        row.update(
            sent=packets,
            lost=lost,
            loss_pct=round(100 * lost / packets, 4) if packets else 0.0,
            jitter_ms=_rounded(summary.get("jitter_ms"), 3),
            achieved_rate=round(packets / span, 1) if span else None,
        )
        return row
    finally:
        if server.returncode is None:
            # With -1 it exits after its one test. Signalling it without waiting would race
            # that exit (Popen reaps a dead child before signalling it, behind asyncio's back).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait(), 2.0)
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 5.0)
            except TimeoutError:
                server.kill()
                await server.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- output ------------------------------------------------------------------------------


def _short_rate(rate: float) -> str:
    if rate >= 1_000_000 and rate % 100_000 == 0:
        return f"{rate / 1_000_000:g}M"
    if rate >= 1000 and rate % 100 == 0:
        return f"{rate / 1000:g}k"
    return f"{rate:g}"


def plot_demo(result: DemoResult, path: Path) -> None:
    """Two panels: loss % and achieved rate against the offered rate, a line per transport.

    The x axis is logarithmic; "max" (no pacing) has no rate of its own, so it sits at the
    right end, past a dashed break. Noise runs are left out: they are about attribution,
    not rate.
    """
    # The object API with an Agg canvas: no pyplot, so no global backend is switched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import (
        FixedFormatter,
        FixedLocator,
        FuncFormatter,
        NullFormatter,
        NullLocator,
    )

    clean = [run for run in result.runs if run.noise is None]
    numeric = sorted({float(run.offered_rate) for run in clean if run.offered_rate != "max"})
    has_max = any(run.offered_rate == "max" for run in clean)
    max_x = numeric[-1] * 4 if numeric else 1.0

    def x_of(rate: Rate) -> float:
        return max_x if rate == "max" else float(rate)

    def draw(ax: Axes, points: list[tuple[Rate, float]], label: str, **style: Any) -> None:
        # Paced points are joined by a line; "max" is joined to them by a dotted one, since
        # it is not a rate on the axis.
        paced = [(float(rate), y) for rate, y in points if rate != "max"]
        unpaced = [y for rate, y in points if rate == "max"]
        line = style.pop("linestyle", "-")
        if paced:
            ax.plot(*zip(*paced, strict=True), linestyle=line, label=label, **style)
            label = "_"
        if unpaced:
            if paced:
                ax.plot([paced[-1][0], max_x], [paced[-1][1], unpaced[0]], linestyle=":",
                        **{**style, "marker": None})  # fmt: skip
            ax.plot([max_x], unpaced[:1], linestyle="none", label=label, **style)

    figure = Figure(figsize=(13, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, rate_ax = figure.subplots(1, 2)
    styles = {"tcp": ("tab:blue", "o"), "udp": ("tab:orange", "s")}
    top_loss = 0.0
    for transport, (color, marker) in styles.items():
        runs = sorted(
            (run for run in clean if run.transport == transport),
            key=lambda run: x_of(run.offered_rate),
        )
        if not runs:
            continue
        style: dict[str, Any] = {"color": color, "marker": marker, "linewidth": 2}
        top_loss = max(top_loss, *(run.loss_pct for run in runs))
        lost, sent = sum(run.lost for run in runs), sum(run.sent for run in runs)
        draw(
            loss_ax,
            [(run.offered_rate, run.loss_pct) for run in runs],
            f"{transport.upper()} (lost {lost:,} of {sent:,})",
            **style,
        )
        for run in runs:
            if run.lost:
                loss_ax.annotate(
                    f"{run.loss_pct:.1f}%",
                    (x_of(run.offered_rate), run.loss_pct),
                    textcoords="offset points",
                    xytext=(-7, 5),
                    ha="right",
                    fontsize=8,
                    color=color,
                )
        draw(
            rate_ax,
            [(run.offered_rate, run.achieved_rate or math.nan) for run in runs],
            transport.upper(),
            **style,
        )
    reference = [row for row in result.reference if row.get("loss_pct") is not None]
    if reference:
        top_loss = max(top_loss, *(float(row["loss_pct"]) for row in reference))
        draw(
            loss_ax,
            sorted(
                ((row["offered_rate"], float(row["loss_pct"])) for row in reference),
                key=lambda point: x_of(point[0]),
            ),
            f"iperf3 UDP ({REFERENCE_LABEL})",
            color="0.4",
            marker="^",
            markersize=9,
            markerfacecolor="none",
            linestyle="--",
            zorder=3,  # hollow markers on top: at 0 % they share the TCP line
        )
    if numeric:
        rate_ax.plot(numeric, numeric, color="0.5", linestyle=":", label="achieved = offered")

    ticks = [*numeric, *([max_x] if has_max else [])]
    labels = [_short_rate(rate) for rate in numeric] + (["max"] if has_max else [])
    for ax in (loss_ax, rate_ax):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FixedFormatter(labels))
        ax.xaxis.set_minor_locator(NullLocator())
        if numeric and has_max:
            ax.axvline(math.sqrt(numeric[-1] * max_x), color="0.8", linestyle="--", linewidth=1)
        if ticks:
            ax.set_xlim(min(ticks) / 1.6, max(ticks) * 1.6)
        ax.set_xlabel("offered rate (readings/s; max = unpaced)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    loss_ax.set_ylim(-0.03 * max(top_loss * 1.2, 5), max(top_loss * 1.2, 5))
    loss_ax.set_ylabel("readings lost (%)")
    loss_ax.set_title("Loss vs offered rate")
    rate_ax.set_yscale("log")
    rate_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: _short_rate(value)))
    rate_ax.yaxis.set_minor_formatter(NullFormatter())
    rate_ax.set_ylabel("achieved send rate (readings/s)")
    rate_ax.set_title("Achieved vs offered rate")
    counts = sorted({run.sent for run in clean})
    per_run = f"{counts[0]:,} readings per run" if len(counts) == 1 else "readings per run vary"
    figure.suptitle(f"forkwire demo: TCP vs UDP over loopback ({per_run}; noise runs not plotted)")
    figure.savefig(path, dpi=110)


def _attribution(run: RunResult) -> str:
    if not run.lost:
        return "—"
    parts = [
        f"{label} {value:,}"
        for label, value in (
            ("noise", run.lost_noise),
            ("kernel", run.lost_kernel),
            ("other", run.lost_elsewhere),
        )
        if value
    ]
    return ", ".join(parts)


def _cell(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _offered(rate: Rate) -> str:
    return "max" if rate == "max" else f"{rate:,}"


def render_table(result: DemoResult) -> Table:
    """The results as a rich table: one row per run, then the iperf3 reference rows."""
    from rich import box
    from rich.table import Table

    table = Table(
        title="forkwire demo: TCP vs UDP loss",
        box=box.SIMPLE_HEAVY,
        caption="\n".join(result.notes),
        caption_justify="left",
    )
    for header in ("transport", "offered/s", "noise"):
        table.add_column(header, no_wrap=True)
    for header in ("sent", "stored", "lost", "loss %", "ooo", "dup", "jitter ms", "p50 ms",
                   "p99 ms", "achieved/s", "kernel drops"):  # fmt: skip
        table.add_column(header, justify="right")
    table.add_column("lost to")
    for run in result.runs:
        table.add_row(
            run.transport,
            _offered(run.offered_rate),
            run.noise or "—",
            _cell(run.sent),
            _cell(run.stored),
            _cell(run.lost),
            _cell(run.loss_pct, 2),
            _cell(run.out_of_order),
            _cell(run.duplicates),
            _cell(run.jitter_ms, 2),
            _cell(run.p50_ms, 1),
            _cell(run.p99_ms, 1),
            _cell(run.achieved_rate),
            _cell(run.kernel_drops),
            _attribution(run),
        )
    if result.reference:
        table.add_section()
    for row in result.reference:
        table.add_row(
            "udp iperf3",
            _offered(row["offered_rate"]),
            "—",
            _cell(row["sent"]),
            _cell(None if row["sent"] is None else row["sent"] - row["lost"]),
            _cell(row["lost"]),
            _cell(row["loss_pct"], 2),
            "—",
            "—",
            _cell(row["jitter_ms"], 2),
            "—",
            "—",
            _cell(row["achieved_rate"]),
            "—",
            row["error"] or REFERENCE_LABEL,
        )
    return table
