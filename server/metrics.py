"""Prometheus metrics, and the small HTTP endpoint that serves them with health checks.

The counters are the dispatcher's (``Dispatcher.stats()``, what the ``stats`` request
answers): a collector reads them at scrape time, so nothing is counted twice. Only the
distributions (job duration, commit batch size and latency) are recorded where the events
happen, in :class:`Histograms`.

The endpoint is a minimal HTTP/1.0 handler on the server's own event loop rather than
prometheus_client's server in a thread: the counters are plain dicts the loop mutates, and
a scrape from another thread could read one mid-update. Each server has a registry of its
own, so that two servers in one process (tests) never share a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from forkwire.protocol import Stat

if TYPE_CHECKING:
    from forkwire.server.dispatch import Dispatcher

log = structlog.get_logger("forkwire.server.metrics")

PREFIX = "forkwire_"
#: Stats that go up and down; every other one only grows (a Prometheus counter).
GAUGES = frozenset(
    {
        Stat.CONNECTIONS_OPEN,
        Stat.PARTIAL_BYTES,
        Stat.JOBS_RUNNING,
        Stat.JOBS_QUEUED,
        Stat.CHILDREN_ALIVE,
        Stat.WRITER_QUEUE_DEPTH,
        Stat.UDP_REQUESTS_INFLIGHT,
        Stat.UDP_RCVBUF,
    }
)
#: Not a measurement.
SKIPPED = frozenset({Stat.PID})
#: Shown only where the server has them (UDP on, Linux's /proc/net/snmp readable).
OPTIONAL = frozenset(
    {
        Stat.PID,
        Stat.UDP_RCVBUF,
        Stat.KERNEL_UDP_RCVBUFERRORS,
        Stat.KERNEL_UDP_INERRORS,
        Stat.KERNEL_UDP_INDATAGRAMS,
    }
)
#: The tally's kinds (see ``ServerConnection.tally``): metric name, label, help.
TALLIES = {
    "in": ("frames_received", "type", "TCP frames received, by message type."),
    "out": ("frames_sent", "type", "TCP frames sent, by message type."),
    "error": ("errors", "code", "Error replies sent (TCP and UDP), by error code."),
}
#: Seconds a readiness answer is reused: a scrape storm must not become a storage storm.
READY_CACHE = 1.0
#: Seconds a client has to send its request line and headers.
REQUEST_TIMEOUT = 5.0
#: The largest request head read.
MAX_HEAD = 8192


class Histograms:
    """The distributions, recorded as they happen, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.job_seconds = Histogram(
            "forkwire_job_duration_seconds",
            "Time from a job's start to its child's answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.commit_batch = Histogram(
            "forkwire_commit_batch_size",
            "Readings per successful group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "forkwire_commit_latency_seconds",
            "Time a successful group commit took in the store.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )

    def committed(self, readings: int, seconds: float) -> None:
        """A group commit of ``readings`` succeeded in ``seconds``."""
        self.commit_batch.observe(readings)
        self.commit_seconds.observe(seconds)


class StatsCollector(Collector):
    """The dispatcher's counters and tally, read at scrape time."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[Metric]:
        # Every counter from the start, 0 until it moves (a Counter holds only those that
        # did): a query over a counter that appears late misses its first increments.
        counters: dict[str, object] = {stat: 0 for stat in Stat if stat not in OPTIONAL}
        counters.update(self.dispatcher.stats().counters)
        for name, value in sorted(counters.items()):
            if name in SKIPPED or not isinstance(value, int | float):
                continue
            if name in GAUGES:
                yield GaugeMetricFamily(PREFIX + name, _help(name), value=value)
            else:
                yield CounterMetricFamily(PREFIX + name, _help(name), value=value)
        families = {
            kind: CounterMetricFamily(PREFIX + metric, text, labels=[label])
            for kind, (metric, label, text) in TALLIES.items()
        }
        for (kind, label), value in sorted(self.dispatcher.tally.items()):
            family = families.get(kind)
            if family is not None:
                family.add_metric([str(label)], value)
        yield from families.values()


def _help(name: str) -> str:
    return f"The {name} counter of the stats request."


class Readiness:
    """Whether the server should get traffic: not shutting down, and its store answers.

    The store is asked with ``probe`` (a cheap query) at most once per :data:`READY_CACHE`
    seconds; a dispatcher in a storage outage (its last storage call failed) is not ready
    either, even if the probe happens to pass.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        probe: Callable[[], Awaitable[object]],
        stopping: Callable[[], bool],
        timeout: float,
    ) -> None:
        self.dispatcher = dispatcher
        self.probe = probe
        self.stopping = stopping
        self.timeout = timeout
        self._checked = -READY_CACHE
        self._store_error: str | None = "not checked"
        self._lock = asyncio.Lock()

    async def check(self) -> str | None:
        """None when ready; otherwise why not."""
        if self.stopping():
            return "shutting down"
        async with self._lock:  # concurrent scrapes share one probe
            if time.monotonic() - self._checked >= READY_CACHE:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self.probe()
                except Exception as exc:
                    self._store_error = f"storage unreachable: {type(exc).__name__}: {exc}"
                else:
                    self._store_error = None
                self._checked = time.monotonic()
        if self._store_error is not None:
            return self._store_error
        if self.dispatcher.in_outage:
            return "storage failing"
        return None


class MetricsEndpoint:
    """``GET /metrics``, ``/healthz`` and ``/readyz`` over HTTP/1.0 on the event loop."""

    def __init__(self, registry: CollectorRegistry, readiness: Readiness) -> None:
        self.registry = registry
        self.readiness = readiness
        self.port: int | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics_started", host=host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        except ConnectionError:
            writer.close()
            return
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        head_out = (
            f"HTTP/1.0 {status} {reason.get(status, 'Service Unavailable')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(head_out + body)
            await writer.drain()
            writer.close()
            await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        path = target.split("?", 1)[0]
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            problem = await self.readiness.check()
            if problem is None:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", f"not ready: {problem}\n".encode()
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"
