"""``python -m bench.stress``: what one greedy client costs the server and everyone else.

Each attack gets a fresh server of its own (``python -m forkwire.server`` on a free port,
a SQLite store in a temporary folder, plus every ``--server-arg``), and runs in three
phases:

1. baseline (``--baseline`` s): a *normal client* loops one small ``calc`` and one
   acked ``reading`` over its own TCP connection, timing each round trip. It runs in a
   process of its own, so the attackers' threads in this one never hold its interpreter:
   its latency is the server's, not the bench's. A request unanswered after 2 s counts
   as failed, and the client connects again; so does a connection refused.
2. the attack, for ``--seconds``, the normal client still looping; a monitor connection
   asks ``stats`` every second (``connections_open``, the held connections).
3. the attacker leaves; after a moment a fresh client connects and asks a calc
   ("answered after": within 5 s, 1 s with ``--quick``), then the server gets SIGTERM
   (how long it took to exit; killed past ``--exit-wait``).

The server's RSS (``VmRSS`` of its pid, job children not counted) is sampled every
0.2 s throughout. A row is OK when RSS peak - before <= ``--rss-bound``, the normal
client's p99 during the attack is under 1 s (a failed request counts as infinitely slow)
and the server answered after. An attack that pushes RSS past ``--rss-cap`` is stopped
there and its row FAILs ("(cap)" beside the peak), so the bench cannot take the machine
down with the server.

The table is a measurement: the exit status is 0 whatever it shows, and 1 only when a
row could not be measured at all (the server did not start, the normal client never got
an answer in the baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import resource
import select
import selectors
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from forkwire.client.connection import Connection
from forkwire.client.errors import ClientError
from forkwire.client.local import LocalServer, ServerFailed
from forkwire.protocol import (
    HEADER_SIZE,
    Ack,
    Calc,
    CalcResult,
    ClientConnection,
    Error,
    FrameDecoder,
    ProtocolError,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Report,
    Stat,
    Stats,
    StatsResult,
    pack,
)
from forkwire.protocol.framing import HEADER, MAX_FRAME_LIMIT

HOST: Final = "127.0.0.1"
#: The normal client's patience, per request and per connect.
TIMEOUT: Final = 2.0
#: The normal client's pause between rounds: a client, not a load generator.
PACE: Final = 0.05
#: The monitor's interval between two ``stats``.
MONITOR_EVERY: Final = 1.0
RSS_EVERY: Final = 0.2
MIB: Final = 1024 * 1024
#: Counts no attack goes past, whatever the time: the bench's own bounds.
MAX_DATAGRAMS: Final = 20_000_000
MAX_FRAMES: Final = 100_000
HOG_WINDOW: Final = 64
HOG_EXPRESSIONS: Final = 100_000
REPORT_SENSORS: Final = 20


@dataclass(frozen=True)
class Knobs:
    """What the attacks are told (the command line, ``--quick`` applied)."""

    seconds: float
    baseline: float
    settle: float
    connections: int
    report_readings: int
    rss_bound_mib: int
    rss_cap_mib: int
    exit_wait: float
    after_timeout: float


@dataclass(frozen=True)
class Target:
    """The server under attack."""

    port: int
    udp_port: int
    pid: int
    max_frame: int


#: An attack: runs in a thread until ``stop`` is set (or its bound is reached), closes
#: everything it opened, and says in a few words what it did.
AttackFn = Callable[[Target, Knobs, threading.Event], str]


@dataclass(frozen=True)
class Attack:
    name: str
    run: AttackFn
    #: Readings to store before the baseline (0: an empty store).
    prefill: Callable[[Knobs], int] = lambda knobs: 0


# --- the attackers: plain blocking sockets in a thread, every wait bounded -------------


def _connect(target: Target) -> socket.socket:
    sock = socket.create_connection((HOST, target.port), timeout=TIMEOUT)
    sock.setblocking(False)
    return sock


def _wait(sock: socket.socket, events: int, timeout: float) -> bool:
    # poll, not select: the partial-frames attack holds fds past FD_SETSIZE.
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(timeout * 1000))


def _send_all(
    sock: socket.socket, data: bytes, stop: threading.Event, deadline: float = math.inf
) -> bool:
    """Write all of ``data`` unless ``stop`` is set or ``deadline`` passes first."""
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        if stop.is_set() or time.monotonic() > deadline:
            return False
        if _wait(sock, select.POLLOUT, 0.2):
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(view[sent:])
    return True


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def _bad_frame(max_frame: int) -> tuple[bytes, int]:
    """The largest calc frame of ``1/0`` lines that ``max_frame`` admits, and how many
    lines it has."""
    count = (max_frame - 64) // 6  # each op is "1/0", in the JSON
    while True:
        frame = pack(Calc.model_construct(id=1, ops=["1/0"] * count))
        if len(frame) - HEADER_SIZE <= max_frame:
            return frame, count
        count -= 1_000


def never_reads(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """One connection sending max_frame-sized jobs of failing expressions (each answered
    by an error object about 20 times its size), never reading a reply."""
    frame, count = _bad_frame(target.max_frame)
    sock = _connect(target)
    frames = 0
    ended = ""
    try:
        while frames < MAX_FRAMES and _send_all(sock, frame, stop):
            frames += 1
    except OSError as exc:
        ended = f"; the server closed it ({exc.strerror or exc})"
    finally:
        _close_all([sock])
    return f"{frames:,} frames of {count:,} '1/0' ({frames * len(frame) / MIB:,.0f} MiB){ended}"


def _hold(
    target: Target, knobs: Knobs, stop: threading.Event, first: bytes
) -> tuple[list[socket.socket], int, int]:
    """Open up to ``knobs.connections`` connections, each sending ``first``; hold them
    until ``stop``. Returns them, the refused count and the stalled count (the server
    stopped reading before ``first`` was all sent: still held)."""
    held: list[socket.socket] = []
    refused = stalled = 0
    for _ in range(knobs.connections):
        if stop.is_set() or refused > 100:
            break
        try:
            sock = _connect(target)
        except OSError:
            refused += 1
            continue
        held.append(sock)
        try:
            if first and not _send_all(sock, first, stop, time.monotonic() + TIMEOUT):
                stalled += 1
        except OSError:
            refused += 1
    stop.wait()
    return held, refused, stalled


def _closed_by_server(socks: list[socket.socket]) -> int:
    """How many of these the server has closed (what it sent before is read and dropped)."""
    closed = 0
    for sock in socks:
        try:
            for _ in range(64):
                if not sock.recv(256 * 1024):
                    closed += 1
                    break
        except BlockingIOError:
            pass  # still open
        except OSError:
            closed += 1
    return closed


def partial_frames(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """K connections, each announcing a max_frame frame and sending all of it but one
    byte, then silence."""
    first = HEADER.pack(target.max_frame) + bytes(target.max_frame - 1)
    held, refused, stalled = _hold(target, knobs, stop, first)
    closed = _closed_by_server(held)
    _close_all(held)
    return (
        f"{len(held):,} connections with {(target.max_frame - 1) / MIB:.2f} MiB of a frame each"
        f" ({stalled:,} not all taken, {refused:,} refused or reset, {closed:,} closed by the"
        " server at the end)"
    )


def idle(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """K connections that connect and say nothing."""
    held, refused, _ = _hold(target, knobs, stop, b"")
    closed = _closed_by_server(held)
    _close_all(held)
    return (
        f"{len(held):,} connections opened ({refused:,} refused, {closed:,} closed by the "
        "server at the end)"
    )


def _udp_flood(target: Target, stop: threading.Event, datagrams: list[bytes]) -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((HOST, target.udp_port))
    sent = errors = 0
    started = time.monotonic()
    try:
        while not stop.is_set() and sent < MAX_DATAGRAMS:
            for datagram in datagrams:
                try:
                    sock.send(datagram)
                    sent += 1
                except OSError:  # an ICMP error for an earlier datagram, or a full buffer
                    errors += 1
    finally:
        sock.close()
    rate = sent / max(time.monotonic() - started, 1e-9)
    return f"{sent:,} datagrams of {len(datagrams[0])} bytes, {rate:,.0f}/s ({errors:,} errors)"


def udp_calc_flood(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """A thread sending small calc datagrams as fast as it can."""
    return _udp_flood(target, stop, [pack(Calc(id=i, ops=["1 + 2"])) for i in range(1000)])


def udp_report_flood(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """The same with ``report`` requests (a store with readings behind them)."""
    return _udp_flood(target, stop, [pack(Report())])


def pipeline_hog(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """One connection keeping 64 jobs of 100,000 expressions in flight, reading its
    replies as they come."""
    ops = ["2*3+4"] * HOG_EXPRESSIONS
    sock = _connect(target)
    conversation = ClientConnection()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    out = bytearray()
    sent = answered = refused = 0
    ended = ""
    try:
        while not stop.is_set():
            while sent - answered < HOG_WINDOW and len(out) < 4 * MIB:
                # model_construct: validating 100,000 strings per frame would be the
                # bench's work, not the server's.
                out += pack(Calc.model_construct(id=sent, ops=ops))
                sent += 1
            # Asking for writable with nothing to write would spin this thread.
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
            selector.modify(sock, wanted)
            for _, mask in selector.select(0.2):
                if mask & selectors.EVENT_WRITE and out:
                    with contextlib.suppress(BlockingIOError):
                        del out[: sock.send(out)]
                if mask & selectors.EVENT_READ:
                    with contextlib.suppress(BlockingIOError):
                        data = sock.recv(1024 * 1024)
                        if not data:
                            raise ConnectionResetError("the server closed the connection")
                        conversation.receive_data(data)
            while (reply := conversation.next_event()) is not None:
                # An error (a server that says busy) frees its slot as an answer does.
                answered += 1
                refused += isinstance(reply, Error)
    except (OSError, ProtocolError) as exc:
        ended = f"; ended: {exc}"
    finally:
        selector.close()
        _close_all([sock])
    return (
        f"{sent:,} jobs of {HOG_EXPRESSIONS:,} sent, {answered:,} answered "
        f"({refused:,} with an error){ended}"
    )


def big_report(target: Target, knobs: Knobs, stop: threading.Event) -> str:
    """One connection asking for the report of a store full of gaps, again and again."""
    sock = _connect(target)
    # Only the frames are counted: decoding tens of MB of report would be the bench's work.
    decoder = FrameDecoder(max_frame=MAX_FRAME_LIMIT)
    reports = 0
    largest = 0
    ended = ""
    try:
        while not stop.is_set():
            if not _send_all(sock, pack(Report()), stop):
                break
            payloads: list[bytes] = []
            while not payloads and not stop.is_set():
                if _wait(sock, select.POLLIN, 0.2):
                    data = sock.recv(4 * MIB)
                    if not data:
                        raise ConnectionResetError("the server closed the connection")
                    payloads = decoder.feed(data)
            reports += len(payloads)
            largest = max([largest, *map(len, payloads)])
    except (OSError, ProtocolError) as exc:
        ended = f"; ended: {exc}"
    finally:
        _close_all([sock])
    return f"{reports:,} reports answered, the largest {largest / MIB:.1f} MiB{ended}"


ATTACKS: Final = (
    Attack("never-reads", never_reads),
    Attack("partial-frames", partial_frames),
    Attack("idle", idle),
    Attack("udp-calc-flood", udp_calc_flood),
    Attack("udp-report-flood", udp_report_flood, lambda knobs: knobs.report_readings // 10),
    Attack("pipeline-hog", pipeline_hog),
    Attack("big-report", big_report, lambda knobs: knobs.report_readings),
)


def _gappy_readings(total: int) -> Iterator[Reading]:
    """``total`` readings over 20 sensors, one seq in ten missing: a dropout each."""
    now = time.time() - 86_400
    per_sensor = max(1, total // REPORT_SENSORS)
    for sensor in range(REPORT_SENSORS):
        kept = 0
        seq = 0
        while kept < per_sensor:
            if seq % 10 != 5:
                yield Reading(
                    sensor=f"stress-{sensor}", seq=seq, ts=now + seq * 0.1, value=float(seq % 97)
                )
                kept += 1
            seq += 1


class PrefillFailed(Exception):
    """The store could not be filled before the attack."""


async def _prefill(port: int, total: int) -> None:
    """Store ``total`` gappy readings through the protocol, 1,000 a frame, 16 in flight."""
    readings = list(_gappy_readings(total))
    frames = [ReadingsMsg(items=readings[i : i + 1000]) for i in range(0, len(readings), 1000)]
    connection = await Connection.open(HOST, port, client="bench-stress-prefill")
    slots = asyncio.Semaphore(16)

    async def receive() -> None:
        for _ in frames:
            reply = await asyncio.wait_for(connection.recv(), 60)
            if not isinstance(reply, Ack):
                raise PrefillFailed(f"prefill: the server answered {reply!r:.200}")
            slots.release()

    # A server that stops reading or acking must not hold the bench forever.
    async with connection, asyncio.timeout(60 + total / 2000):
        receiver = asyncio.create_task(receive())
        for frame in frames:
            await slots.acquire()
            await connection.send(frame)
        await receiver


# --- the normal client, in a process of its own ----------------------------------------

#: The normal client's calc, and the answer it must get.
OPS: Final = ("1 + 2", "3 * 4", "10 / 4")
EXPECTED: Final = [3, 12, 2.5]
#: (monotonic time sent, what, seconds to the answer or None: failed or timed out)
Sample = tuple[float, str, float | None]


def _normal_client(
    stop: multiprocessing.synchronize.Event,
    ready: multiprocessing.synchronize.Event,
    channel: multiprocessing.connection.Connection,
) -> None:
    # Started before the server, so that its imports overlap the server's start.
    port = channel.recv()
    samples = asyncio.run(_normal_loop(port, stop, ready)) if port else []
    channel.send(samples)


async def _normal_loop(
    port: int, stop: multiprocessing.synchronize.Event, ready: multiprocessing.synchronize.Event
) -> list[Sample]:
    samples: list[Sample] = []
    connection: Connection | None = None
    rounds = 0
    parent = os.getppid()
    # A bench killed outright never sets stop: the client must not outlive it.
    while not stop.is_set() and os.getppid() == parent:
        rounds += 1
        if connection is None:
            started = time.monotonic()
            try:
                connection = await Connection.open(
                    HOST, port, client="bench-stress-normal", connect_timeout=TIMEOUT
                )
            except ClientError:
                samples.append((started, "connect", None))
                await asyncio.sleep(PACE)
                continue
        requests = (
            Calc(id=rounds, ops=list(OPS)),
            ReadingMsg(sensor="normal", seq=rounds, ts=time.time(), value=float(rounds)),
        )
        for request in requests:
            started = time.monotonic()
            try:
                reply = await asyncio.wait_for(connection.request(request), TIMEOUT)
                ok = (
                    reply.results == EXPECTED
                    if isinstance(reply, CalcResult)
                    else isinstance(reply, Ack) and isinstance(request, ReadingMsg)
                )
            except (TimeoutError, ClientError, OSError):
                ok = False
            samples.append((started, request.type, time.monotonic() - started if ok else None))
            if not ok:
                # A late answer would pair with the next request: start over.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connection.close(), 1.0)
                connection = None
                break
        else:
            ready.set()
        await asyncio.sleep(PACE)
    if connection is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.close(), 1.0)
    return samples


class NormalClient:
    """The normal client's process: spawned, pointed at a port, stopped for its samples."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self.ready = context.Event()
        self._channel, theirs = context.Pipe()
        self._proc = context.Process(
            target=_normal_client, args=(self._stop, self.ready, theirs), daemon=True
        )
        self._proc.start()
        theirs.close()
        self._told = False

    def go(self, port: int) -> None:
        self._channel.send(port)
        self._told = True

    def finish(self) -> list[Sample]:
        """Stop it (a request in flight still gets its time) and return its samples."""
        self._stop.set()
        samples: list[Sample] = []
        with contextlib.suppress(OSError, EOFError):
            if not self._told:
                self._channel.send(0)
            if self._channel.poll(TIMEOUT * 3 + 5):
                samples = self._channel.recv()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        return samples


# --- the server: started with our limits, watched, stopped ------------------------------


class RssSampler(threading.Thread):
    """``VmRSS`` of one pid every 0.2 s; past ``cap`` it sets the armed stop event."""

    def __init__(self, pid: int, cap_kib: int) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.cap_kib = cap_kib
        self.samples: list[tuple[float, int]] = []
        self.capped = False
        self._armed: threading.Event | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            kib = _rss_kib(self.pid)
            if kib is None:
                return
            self.samples.append((time.monotonic(), kib))
            if self._armed is not None and kib > self.cap_kib and not self._armed.is_set():
                self.capped = True
                self._armed.set()
            self._done.wait(RSS_EVERY)

    def arm(self, stop: threading.Event) -> None:
        self._armed = stop

    def latest(self) -> int | None:
        kib = _rss_kib(self.pid)
        if kib is not None:
            self.samples.append((time.monotonic(), kib))
            return kib
        return self.samples[-1][1] if self.samples else None

    def peak(self, since: float) -> int | None:
        return max((kib for t, kib in self.samples if t >= since), default=None)

    def finish(self) -> None:
        self._done.set()
        self.join(2)


def _rss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of its stat): a pid and this name one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """The processes below ``pid`` (job children, the forkserver), with start times."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            started = _start_time(child)
            if started is not None:
                found.append((child, started))
                todo.append(child)
    return found


async def _start_server(store: Path, server_args: list[str], nofile: int) -> LocalServer:
    # The server inherits our RLIMIT_NOFILE at fork; it gets the one a user would have
    # given it, not the one raised here for the attackers' connections.
    raised = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, raised[1]), raised[1]))
    try:
        return await LocalServer.start("--db", f"sqlite:///{store}", *server_args)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, raised)


async def _stop_server(server: LocalServer, wait: float) -> str:
    """SIGTERM, and how long it took to exit; killed, its children too, after ``wait``."""
    below = _descendants(server.pid)
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        server.proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = await asyncio.wait_for(server.proc.wait(), wait)
    except TimeoutError:
        code = None
    seconds = time.monotonic() - started
    # Children hold the server's stderr: until they are gone its log does not end.
    for pid, start_time in [*below, *_descendants(server.pid)]:
        if _start_time(pid) == start_time:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    await server.stop(signal.SIGKILL if code is None else None, wait=1.0)
    return f"killed after {wait:g} s" if code is None else f"{seconds:.1f} s, rc {code}"


class Monitor:
    """Asks ``stats`` now and then over its own connection; keeps the most
    ``connections_open`` seen. A stuck or closed connection is replaced at the next ask."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.held: int | None = None
        self.unanswered = 0
        self._connection: Connection | None = None
        self._stopped = False

    async def ask(self) -> None:
        try:
            if self._connection is None:
                self._connection = await Connection.open(
                    HOST, self.port, client="bench-stress-monitor", connect_timeout=TIMEOUT
                )
            async with asyncio.timeout(TIMEOUT):
                reply = await self._connection.request(Stats())
        except (TimeoutError, ClientError, OSError):
            self.unanswered += 1
            await self.close()
            return
        if isinstance(reply, StatsResult):
            now = int(reply.counters.get(Stat.CONNECTIONS_OPEN, 0))
            self.held = now if self.held is None else max(self.held, now)

    async def watch(self, every: float) -> None:
        """Ask every ``every`` seconds until :meth:`stop`."""
        while not self._stopped:
            asked = time.monotonic()
            await self.ask()
            await asyncio.sleep(max(0.0, every - (time.monotonic() - asked)))

    async def stop(self, watching: asyncio.Task[None]) -> None:
        """End :meth:`watch`. Cancelling alone is not enough: on 3.11 an ``asyncio.wait_for``
        (``Connection.open`` has one) whose inner call completes as it is cancelled swallows
        the cancellation, and the loop would ask on forever."""
        self._stopped = True
        watching.cancel()
        await asyncio.wait({watching}, timeout=2 * TIMEOUT + 1)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connection.close(), 1.0)
            self._connection = None


async def _answered_after(port: int, patience: float) -> float | None:
    """Seconds for a fresh client to connect and get a calc answered, None past
    ``patience``."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(patience):
            connection = await Connection.open(
                HOST, port, client="bench-stress-after", connect_timeout=patience
            )
            try:
                reply = await connection.request(Calc(id=1, ops=["6 * 7"]))
            finally:
                await connection.close()
    except (TimeoutError, ClientError, OSError):
        return None
    return time.monotonic() - started if isinstance(reply, CalcResult) else None


# --- one row ----------------------------------------------------------------------------


@dataclass
class Row:
    attack: str
    note: str = ""
    held: int | None = None
    rss_before: int | None = None
    rss_peak: int | None = None
    rss_after: int | None = None
    latencies: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    answered_after: float | None = None
    exit: str = ""
    error: str = ""
    capped: bool = False
    welcome: str = ""

    @property
    def failed(self) -> int:
        return sum(1 for seconds in self.latencies if math.isinf(seconds))

    def ok(self, bound_kib: int) -> bool:
        return (
            not self.error
            and not self.capped  # stopped early: what it would have reached is unknown
            and self.rss_before is not None
            and self.rss_peak is not None
            and self.rss_peak - self.rss_before <= bound_kib
            and bool(self.latencies)
            and percentile(self.latencies, 0.99) < 1.0
            and self.answered_after is not None
        )


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the value that ``q`` of them are at most."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _latencies(samples: list[Sample], start: float, end: float) -> list[float]:
    return [math.inf if s is None else s for t, _, s in samples if start <= t < end]


async def run_attack(
    attack: Attack, knobs: Knobs, server_args: list[str], nofile: int, tmp: Path
) -> Row:
    """Start a server, measure a baseline, run ``attack``, see what is left, stop it."""
    row = Row(attack.name)
    client = NormalClient()
    try:
        server = await _start_server(tmp / f"{attack.name}.sqlite", server_args, nofile)
    except ServerFailed as exc:
        await asyncio.to_thread(client.finish)
        row.error = str(exc)
        return row
    sampler = RssSampler(server.pid, knobs.rss_cap_mib * 1024)
    sampler.start()
    monitor = Monitor(server.port)
    finished = False
    try:
        async with asyncio.timeout(15):
            probe = await Connection.open(HOST, server.port, client="bench-stress")
            async with probe:
                welcome = probe.welcome
        row.welcome = f"{welcome.server}, max_frame {welcome.max_frame:,}, limits {welcome.limits}"
        target = Target(server.port, server.udp_port, server.pid, welcome.max_frame)
        if readings := attack.prefill(knobs):
            await _prefill(server.port, readings)
            row.note = f"store: {readings:,} readings over {REPORT_SENSORS} sensors, gaps; "
        client.go(server.port)
        if not await asyncio.to_thread(client.ready.wait, 30):
            row.error = "the normal client got no answer before the attack"
            return row
        base_start = time.monotonic()
        await monitor.ask()
        await asyncio.sleep(knobs.baseline)
        row.rss_before = sampler.latest()
        stop = threading.Event()
        sampler.arm(stop)
        start = time.monotonic()
        attacker = asyncio.create_task(asyncio.to_thread(attack.run, target, knobs, stop))
        monitor.held = None
        # Beside the attack, not in its way: a stuck stats must not make the attack longer.
        watching = asyncio.create_task(monitor.watch(min(MONITOR_EVERY, knobs.seconds / 4)))
        await asyncio.to_thread(stop.wait, knobs.seconds)  # set early past the RSS cap
        stop.set()
        await monitor.stop(watching)
        end = time.monotonic()
        row.capped = sampler.capped
        row.held = monitor.held
        await monitor.close()
        # The client's samples carry their times: it may finish (a request in flight gets
        # its full timeout) while the attacker leaves and the fresh client tries.
        collected = asyncio.create_task(asyncio.to_thread(client.finish))
        finished = True
        try:
            row.note += await asyncio.wait_for(attacker, 30)
        except Exception as exc:  # the row still says what the server did
            row.note += f"the attacker failed: {exc!r}"
        await asyncio.sleep(knobs.settle)
        row.answered_after = await _answered_after(server.port, knobs.after_timeout)
        row.rss_after = sampler.latest()
        row.rss_peak = sampler.peak(start)
        samples = await collected
        row.baseline = _latencies(samples, base_start, start)
        row.latencies = _latencies(samples, start, end)
        if not row.baseline or all(math.isinf(s) for s in row.baseline):
            row.error = "the normal client got no answer in the baseline"
    except (TimeoutError, ClientError, OSError, PrefillFailed) as exc:  # probe, prefill
        row.error = f"could not measure: {exc!r}"
    finally:
        if not finished:
            await asyncio.to_thread(client.finish)
        await monitor.close()
        row.exit = await _stop_server(server, knobs.exit_wait)
        sampler.finish()
    return row


# --- the command line and the table -----------------------------------------------------


def _mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.0f}"


def _ms(seconds: float) -> str:
    return f">{TIMEOUT:g} s" if math.isinf(seconds) else f"{seconds * 1000:,.1f}"


def table(rows: list[Row], knobs: Knobs) -> Table:
    bound_kib = knobs.rss_bound_mib * 1024
    result = Table(
        title=f"bench.stress: {knobs.seconds:g} s per attack; OK = RSS peak - before <= "
        f"+{knobs.rss_bound_mib} MiB, normal client p99 < 1 s, answered after",
        caption="held: most connections_open seen by the monitor (its own and the normal "
        "client's included); RSS of the server process in MiB; latencies in ms, a failed or "
        f"timed-out request ({TIMEOUT:g} s) counted as infinitely slow",
    )
    for name in ("attack", "held", "RSS before", "peak", "after", "p50 ms", "p99 ms"):
        result.add_column(name, justify="left" if name == "attack" else "right")
    for name in ("failed", "answered after", "SIGTERM exit", "verdict"):
        result.add_column(name, justify="right")
    for row in rows:
        if row.error and not row.latencies:
            result.add_row(row.attack, *["-"] * 9, "[red]ERROR[/red]")
            continue
        lat = row.latencies
        ok = row.ok(bound_kib)
        peak = _mib(row.rss_peak) + (" (cap)" if row.capped else "")
        result.add_row(
            row.attack,
            "-" if row.held is None else f"{row.held:,}",
            _mib(row.rss_before),
            peak,
            _mib(row.rss_after),
            _ms(percentile(lat, 0.5)) if lat else "-",
            _ms(percentile(lat, 0.99)) if lat else "-",
            f"{row.failed:,} / {len(lat):,}",
            "no" if row.answered_after is None else f"yes, {row.answered_after:.2f} s",
            row.exit,
            "[green]OK[/green]" if ok else "[red]FAIL[/red]",
        )
    return result


def _knobs(options: argparse.Namespace) -> Knobs:
    quick = options.quick

    def pick(value: float | None, normal: float, fast: float) -> float:
        return value if value is not None else fast if quick else normal

    return Knobs(
        seconds=pick(options.seconds, 10.0, 1.0),
        baseline=pick(options.baseline, 2.0, 0.5),
        settle=0.2 if quick else 1.0,
        connections=int(pick(options.connections, 1000, 50)),
        report_readings=int(pick(options.report_readings, 200_000, 5_000)),
        rss_bound_mib=options.rss_bound,
        rss_cap_mib=options.rss_cap,
        exit_wait=pick(options.exit_wait, 5.0, 1.0),
        after_timeout=1.0 if quick else 5.0,
    )


def _raise_nofile() -> tuple[int, int]:
    """Raise our soft RLIMIT_NOFILE to the hard one (K connections are K fds here);
    returns the limits as they were."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stress",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    names = [attack.name for attack in ATTACKS]
    parser.add_argument("--seconds", type=float, help="length of each attack (default 10)")
    parser.add_argument("--baseline", type=float, help="seconds before it (default 2)")
    parser.add_argument(
        "--connections", type=int, help="connections of partial-frames and idle (default 1000)"
    )
    parser.add_argument(
        "--report-readings",
        type=int,
        help="readings stored for big-report (default 200,000; a tenth for udp-report-flood)",
    )
    parser.add_argument("--rss-bound", type=int, default=256, help="MiB over before; OK bound")
    parser.add_argument(
        "--rss-cap", type=int, default=4096, help="MiB of server RSS that stops an attack"
    )
    parser.add_argument("--exit-wait", type=float, help="seconds after SIGTERM before SIGKILL")
    parser.add_argument(
        "--attacks", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more server argument, repeatable: --server-arg=--workers=2",
    )
    parser.add_argument(
        "--server-nofile",
        type=int,
        help="the server's RLIMIT_NOFILE soft limit (default: this shell's)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 s attacks, 50 connections"
    )
    options = parser.parse_args(argv)
    chosen = [name.strip() for name in options.attacks.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}")
    attacks = [attack for attack in ATTACKS if attack.name in chosen]
    knobs = _knobs(options)
    soft, hard = _raise_nofile()
    # SIGTERM as Ctrl-C: the running attack is unwound and its server stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    nofile = options.server_nofile or soft

    console = Console(width=None if sys.stdout.isatty() else 170)
    argv_shown = sys.argv[1:] if argv is None else argv
    print(f"command: python -m bench.stress {shlex.join(argv_shown)}")
    print(
        f"settings: attacks {', '.join(a.name for a in attacks)}; {knobs.seconds:g} s each after "
        f"a {knobs.baseline:g} s baseline; {knobs.connections:,} connections; big-report store "
        f"{knobs.report_readings:,} readings; RSS bound +{knobs.rss_bound_mib} MiB, cap "
        f"{knobs.rss_cap_mib:,} MiB; SIGKILL {knobs.exit_wait:g} s after SIGTERM"
    )
    print(
        f"normal client: calc of 3 + acked reading every {PACE * 1000:.0f} ms, timeout "
        f"{TIMEOUT:g} s, its own process; RLIMIT_NOFILE: bench {hard:,} (raised from "
        f"{soft:,}), server {nofile:,}"
    )
    print(
        "server: python -m forkwire.server --host 127.0.0.1 --port 0 --log-format json "
        f"--db sqlite:///<tmp>/<attack>.sqlite {shlex.join(options.server_arg)}",
        flush=True,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fw-stress-") as tmp:
        for attack in attacks:
            print(f"- {attack.name} ...", flush=True)
            began = time.monotonic()
            try:
                row = asyncio.run(run_attack(attack, knobs, options.server_arg, nofile, Path(tmp)))
            except KeyboardInterrupt:  # its server was stopped on the way out
                print(f"bench.stress: interrupted during {attack.name}", file=sys.stderr)
                return 130
            if row.welcome and not any(r.welcome for r in rows):
                print(f"  server says: {row.welcome}")
            base = row.baseline
            baseline = "no baseline"
            if base:
                p50, p99 = _ms(percentile(base, 0.5)), _ms(percentile(base, 0.99))
                baseline = f"baseline p50 {p50} ms, p99 {p99} ms"
            took = f"{time.monotonic() - began:.1f} s in all"
            said = "; ".join(part for part in (row.note, baseline, took, row.error) if part)
            print(f"  {said}", flush=True)
            rows.append(row)
    console.print(table(rows, knobs))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
