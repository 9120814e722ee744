"""The demo's run: every rate over TCP and UDP, then the noise pair, each one measured.

A :class:`_Measurer` runs one sender at a time, waits until the server has stored what
it will (:func:`_settle`), and reads back what was stored through the ``series`` request,
the same way from its own server and from an external one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from forkwire.client.connection import PLAIN, Connection, Credentials
from forkwire.client.demo.config import DemoConfig, DemoError
from forkwire.client.demo.fidelity import (
    cpu_sample,
    cpu_shares,
    rcvbuf_note,
    read_rmem_max,
    verdicts,
)
from forkwire.client.demo.iperf import _iperf_reference
from forkwire.client.demo.metrics import (
    Rate,
    _normalise_rate,
    _rounded,
    attribute_loss,
    count_out_of_order,
    percentile,
    rfc3550_jitter,
)
from forkwire.client.demo.plot import plot_demo
from forkwire.client.demo.results import DemoResult, RunResult
from forkwire.client.demo.senders import _send_tcp, _send_udp
from forkwire.client.demo.table import print_table
from forkwire.client.errors import MissingExtra, make_folder
from forkwire.client.local import LocalServer
from forkwire.client.report.fetch import ReportQuery, fetch_series
from forkwire.client.sensors.noise import parse_noise
from forkwire.client.transport import Transport
from forkwire.client.udp import UdpConnection
from forkwire.protocol import ReadingMsg, Stat, Stats, StatsResult, pack

#: The server has stored all it will once its counters stood still this long.
_SETTLE_QUIET: Final = 0.5
_SETTLE_POLL: Final = 0.05


def run_demo_sync(config: DemoConfig) -> DemoResult:
    """:func:`run_demo` in a fresh event loop, for a synchronous caller (the CLI)."""
    return asyncio.run(run_demo(config))


async def run_demo(config: DemoConfig) -> DemoResult:
    """Run every rate over TCP and UDP, then the noise pair; write demo.json and demo.png
    (demo.png only with the ``plot`` extra; without it, a note says so).

    Raises:
        ConnectError: the external server cannot be reached (``forkwire.client.connection``).
        ServerFailed: the own server did not start.
        DemoError: a run failed (acks timed out, the server refused readings).
    """
    out_dir = config.out_dir if config.out_dir is not None else Path.cwd()
    make_folder(out_dir, "output folder")
    say = config.progress or (lambda _line: None)
    notes: list[str] = []
    asked = server_pid = None  # SO_RCVBUF asked for, and the pid: of the own server only
    async with contextlib.AsyncExitStack() as stack:
        if config.port is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fw-demo-")))
            db_path = config.db_path if config.db_path is not None else workdir / "demo.sqlite"
            asked = config.own_udp_rcvbuf
            args = ["--db", f"sqlite:///{db_path.resolve()}", "--udp-rcvbuf", str(asked)]
            server = await LocalServer.start(*args, cwd=workdir)
            server_pid = server.pid
            stack.push_async_callback(server.stop)
            host, port, udp_port = "127.0.0.1", server.port, server.udp_port
            server_name = "own"
            say(f"server started on 127.0.0.1:{port} (pid {server.pid}, sqlite {db_path})")
        else:
            host = config.host or "127.0.0.1"
            port = config.port
            udp_port = config.udp_port or port
            server_name = f"{host}:{port}"
        credentials = config.credentials if config.port is not None else PLAIN
        control = await Connection.open(host, port, client="forkwire-demo", credentials=credentials)
        stack.push_async_callback(control.close)
        udp = await UdpConnection.open(host, udp_port, token=credentials.token)
        stack.callback(udp.close)
        await udp.hello()  # fail early if nothing answers over UDP
        measurer = _Measurer(config, host, port, udp, control, say, credentials)
        first = await _stats(control)
        rcvbuf = _int_or_none(first.get(Stat.UDP_RCVBUF))

        measurer.server_pid = server_pid
        runs: list[RunResult] = []
        for rate in config.run_rates:
            for transport in Transport:
                runs.append(await measurer.run(transport, rate, config.run_count, None))
        if config.noise is not None:
            noise_rate = _normalise_rate(config.noise_rate)
            for transport in Transport:
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
    buffer = rcvbuf_note(asked, rcvbuf, read_rmem_max() if server_pid is not None else None)
    if buffer is not None:
        notes.append(buffer)
    notes.extend(verdicts(runs, reference, rcvbuf))
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
    try:
        await asyncio.to_thread(plot_demo, result, out_dir / "demo.png")
    except MissingExtra as exc:
        result.png_path = None
        result.notes.append(f"demo.png not drawn: {exc}")
    result.json_path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    drawn = "" if result.png_path is None else f" and {result.png_path}"
    say(f"wrote {result.json_path}{drawn}")
    if config.console is not None:
        print_table(config.console, result)
    return result


class _Measurer:
    """Runs one sender at a time and measures what the server stored of it."""

    #: The own server's pid, to measure its CPU (None: an external server).
    server_pid: int | None = None

    def __init__(
        self,
        config: DemoConfig,
        host: str,
        port: int,
        udp: UdpConnection,
        control: Connection,
        say: Callable[[str], None],
        credentials: Credentials = PLAIN,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.host = host
        self.port = port
        self.udp = udp
        self.control = control
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
        cpu_before, clock_before = cpu_sample(self.server_pid), time.perf_counter()
        per_second = None if rate == "max" else float(rate)
        if transport is Transport.tcp:
            sent = await _send_tcp(
                self.host,
                self.port,
                sensor,
                per_second,
                count,
                chain,
                self.config.tcp_batch,
                self.config.tcp_window,
                self.credentials,
            )
        else:
            sent = await _send_udp(self.udp, sensor, per_second, count, chain)
        # The CPU of the sending, not of the quiet wait that follows it.
        server_cpu, host_cpu = cpu_shares(
            cpu_before, cpu_sample(self.server_pid), time.perf_counter() - clock_before
        )
        after, settled = await _settle(self.control, self.config.settle_timeout)
        series = await fetch_series(self.control, sensor, "scalar", ReportQuery(fill="none"))
        # Arrival order: the commit that stored a reading, then its seq within the commit.
        arrival = sorted(
            zip(series.received_at, series.seq.tolist(), series.ts.tolist(), strict=True)
        )
        stored = len(arrival)
        seqs = [seq for _, seq, _ in arrival]
        transits_ms = [((received or 0.0) - ts) * 1000 for received, _, ts in arrival]
        out_of_order = count_out_of_order(seqs)
        jitter = rfc3550_jitter(transits_ms)
        p50 = percentile(transits_ms, 50)
        p99 = percentile(transits_ms, 99)
        outside = [seq for seq in seqs if not 0 <= seq < sent.issued]
        if outside:
            raise DemoError(f"{sensor}: stored seqs outside 0..{sent.issued - 1}: {outside[:5]}")
        lost = sent.issued - stored
        noise_dropped = len(sent.noise_seqs)
        kernel = None
        if transport is Transport.udp:
            kernel = _delta(before, after, Stat.KERNEL_UDP_RCVBUFERRORS)
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
            duplicates=_delta(before, after, Stat.READINGS_DUPLICATE),
            jitter_ms=_rounded(jitter, 3),
            p50_ms=_rounded(p50, 3),
            p99_ms=_rounded(p99, 3),
            achieved_rate=round(sent.issued / sent.seconds, 1) if sent.seconds > 0 else None,
            kernel_drops=kernel,
            noise_dropped=noise_dropped,
            lost_noise=by_noise,
            lost_kernel=by_kernel,
            lost_elsewhere=elsewhere,
            server_received=_delta(before, after, Stat.READINGS_RECEIVED),
            send_seconds=round(sent.seconds, 4),
            acked_seconds=_rounded(sent.acked_seconds, 4),
            settled=settled,
            noise_seqs=sent.noise_seqs,
            server_cpu=_rounded(server_cpu, 3),
            host_cpu=_rounded(host_cpu, 3),
        )
        self.say(
            f"  stored {stored:,}, lost {lost:,} ({result.loss_pct:g} %), "
            f"achieved {result.achieved_rate or 0:,.0f}/s"
            + ("" if settled else " (server still busy at the settle timeout)")
        )
        return result


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
            for name in (Stat.READINGS_RECEIVED, Stat.UDP_DATAGRAMS_RECEIVED, Stat.READINGS_STORED)
        )
        if moving != last:
            last, still_since = moving, now
        in_flight = (
            counters.get(Stat.READINGS_RECEIVED, 0)
            - counters.get(Stat.READINGS_STORED, 0)
            - counters.get(Stat.READINGS_DUPLICATE, 0)
        )
        idle = counters.get(Stat.WRITER_QUEUE_DEPTH, 0) == 0 and in_flight <= 0
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


def _delta(before: dict[str, int | float], after: dict[str, int | float], name: str) -> int | None:
    # The server's counters appear on first use: absent before means 0; absent after means
    # the server does not have that counter (no /proc/net/snmp, an older server).
    if name not in after or (name.startswith("kernel_") and name not in before):
        return None
    return int(after[name] - before.get(name, 0))


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
