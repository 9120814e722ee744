"""Start, serve, and shut down in order.

Shutdown is one path for TCP and UDP, in uvicorn's order: stop accepting connections and
datagrams, ask every connection to stop reading, give the requests in flight (TCP and UDP
together) ``grace`` seconds to be answered, kill the children that are left and cancel
what remains (a bounded number of tasks: UDP's are capped by ``udp_max_inflight``), then
flush and close storage, which gets the rest of the grace period and a small margin. The
log says what was abandoned. Whatever hangs, the process is gone ``grace`` plus a few
seconds after the first signal; a second SIGINT/SIGTERM exits at once (``run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

import structlog

from forkwire.protocol import Stat, build_validators
from forkwire.server.admission import Admission
from forkwire.server.config import Settings
from forkwire.server.daemon import redirect_output
from forkwire.server.dispatch import Dispatcher
from forkwire.server.ingest import Writer
from forkwire.server.jobs import JobRunner
from forkwire.server.metrics import MetricsEndpoint, Readiness, StatsCollector
from forkwire.server.sinks import Sinks
from forkwire.server.storage import Repository, open_repository, open_sink
from forkwire.server.storage.base import SCHEMA_VERSION
from forkwire.server.tcp import READER_LIMIT, Budget, Door, TcpConnection
from forkwire.server.tls import Handshakes, tls_context
from forkwire.server.udp import UdpEndpoint, kernel_udp_stats, open_udp

log = structlog.get_logger("forkwire.server")

#: Seconds the cancelled tasks get to unwind after the grace period.
CANCEL_WAIT = 0.5
#: Seconds storage gets to flush and close beyond what is left of the grace period.
STORAGE_MARGIN = 1.0
#: Past grace plus this, the watchdog ends the process whatever still runs (exit 1).
WATCHDOG_MARGIN = 3.0


class App:
    """The daemon: a TCP listener in front of the job runner.

    ``started`` is set once the listener is bound; ``port`` is then the real port (useful
    with port 0).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = asyncio.Event()
        self.port: int | None = None
        self.udp_port: int | None = None
        self.runner = JobRunner(
            workers=settings.workers,
            job_timeout=settings.job_timeout,
            limits=settings.limits,
            max_reply=settings.max_reply,
        )
        self.dispatcher = Dispatcher(settings, self.runner)
        self.admission = Admission(
            settings.workers, settings.max_queued_jobs, settings.jobs_per_connection
        )
        self._door: Door | None = None
        self._handshakes: Handshakes | None = None
        self._handshaking = 0  # connections in their TLS handshake: counted as open
        self._partial = Budget(settings.max_partial)
        self.dispatcher.stats_sources.append(
            lambda: {
                Stat.JOBS_QUEUED: self.admission.queued,
                Stat.PARTIAL_BYTES: self._partial.held,
            }
        )
        self.repository: Repository | None = None
        self._connections: dict[asyncio.Task[None], TcpConnection] = {}
        self._stopping = False
        #: The metrics endpoint, when ``metrics_port`` is set.
        self.metrics: MetricsEndpoint | None = None
        #: loop.time() by which storage must be closed; set when shutdown starts.
        self._storage_deadline: float | None = None
        #: What storage could not close in time (``run`` then exits without waiting).
        self.abandoned: list[str] = []
        # Kept referenced: a task the loop forgets is collected with a "destroyed but
        # pending" line on stderr, which is not JSON.
        self._left_behind: set[asyncio.Future[None]] = set()

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        async with contextlib.AsyncExitStack() as resources:
            await self._open_storage(resources)
            if self.settings.metrics_port is not None:
                # Up until the connections are done: /readyz says 503 through their grace period.
                await self._start_metrics(resources, self.settings.metrics_port)
            await self._serve(stop)
        log.info("shutdown_complete")

    def _closing(
        self, what: str, close: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """``close``, bounded by the storage deadline: a store that does not answer (a
        silent PostgreSQL) is left behind, logged, instead of holding the exit forever."""

        async def bounded() -> None:
            loop = asyncio.get_running_loop()
            deadline = self._storage_deadline
            if deadline is None:  # never served: startup failed half-way
                deadline = loop.time() + self.settings.grace + STORAGE_MARGIN
            budget = max(deadline - loop.time(), 0.1)
            task = asyncio.ensure_future(close())
            done, _ = await asyncio.wait({task}, timeout=budget)
            if task in done:
                task.result()  # a failure to close is raised as before
                return
            task.cancel()
            # Not awaited past a moment: a close stuck in the driver may ignore the cancel.
            await asyncio.wait({task}, timeout=0.1)
            self._left_behind.add(task)
            self.abandoned.append(what)
            log.error("storage_close_abandoned", what=what, waited=round(budget, 3))

        return bounded

    async def _open_storage(self, resources: contextlib.AsyncExitStack) -> None:
        store_url, *sink_urls = self.settings.db
        sinks = None
        if sink_urls:
            sinks = Sinks(
                [
                    (
                        _redact(url),
                        await open_sink(
                            url,
                            self.settings.durability,
                            storage_timeout=self.settings.storage_timeout,
                        ),
                    )
                    for url in sink_urls
                ]
            )
            sinks.start()
            resources.push_async_callback(self._closing("sinks", sinks.close))
        repo = await open_repository(
            store_url, self.settings.durability, storage_timeout=self.settings.storage_timeout
        )
        resources.push_async_callback(self._closing("store", repo.close))
        migrated_from = getattr(repo, "migrated_from", None)
        if migrated_from is not None:
            log.warning(
                "storage_migrated",
                store=_redact(store_url),
                from_version=migrated_from,
                to_version=SCHEMA_VERSION,
            )
        writer = Writer(
            repo,
            flush_interval=self.settings.commit_interval,
            max_batch=self.settings.commit_batch,
            on_commit=sinks.offer if sinks is not None else None,
            on_timing=self.dispatcher.histograms.committed,
        )
        await writer.start()
        # Registered after the store and the sinks, so it runs first: flush, then close.
        resources.push_async_callback(self._closing("writer", writer.close))
        self.repository = repo
        self.dispatcher.writer = writer
        self.dispatcher.sinks = sinks
        log.info(
            "storage_opened",
            store=_redact(store_url),
            sinks=[_redact(u) for u in sink_urls],
            durability=self.settings.durability,
        )

    async def _start_metrics(self, resources: contextlib.AsyncExitStack, port: int) -> None:
        registry = self.dispatcher.histograms.registry
        registry.register(StatsCollector(self.dispatcher))
        repo = self.repository
        assert repo is not None
        readiness = Readiness(
            self.dispatcher,
            # One indexed lookup of a sensor nobody names: the store answers, cheaply.
            probe=lambda: repo.query(["\x00readyz"], limit=1),
            stopping=lambda: self._stopping,
            timeout=min(self.settings.storage_timeout, 2.0),
        )
        self.metrics = MetricsEndpoint(registry, readiness)
        await self.metrics.start(self.settings.metrics_host, port)
        resources.push_async_callback(self.metrics.close)

    async def _serve(self, stop: asyncio.Event) -> None:
        settings = self.settings
        context = tls_context(settings)
        if context is not None:
            self._handshakes = Handshakes(context, settings.hello_timeout)
        await self.runner.start()
        build_validators()  # before the first client, not during its first frame
        server = await asyncio.start_server(
            self._accept, settings.host, settings.port, reuse_address=True, limit=READER_LIMIT
        )
        self.port = server.sockets[0].getsockname()[1]
        self._door = Door(settings.max_connections, settings.workers)
        udp = udp_transport = None
        if settings.udp:
            udp_port = self.port if settings.udp_port is None else settings.udp_port
            udp_transport, udp = await open_udp(
                self.dispatcher, settings.host, udp_port, settings.udp_rcvbuf
            )
            self.udp_port = udp_transport.get_extra_info("sockname")[1]
            self.dispatcher.stats_sources.append(kernel_udp_stats)
        log.info(
            "server_started",
            host=settings.host,
            port=self.port,
            udp_port=self.udp_port,
            workers=settings.workers,
            max_frame=settings.max_frame,
            job_timeout=settings.job_timeout,
            tls=context is not None,
            tls_client_certificates=settings.tls_client_ca is not None,
            token_required=self.dispatcher.token is not None,
        )
        self.started.set()
        try:
            await stop.wait()
        finally:
            await self._shutdown(server, udp, udp_transport)

    def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Awaitable[None]:
        # Called as the connection is made, before a byte is read: over TLS, what the client
        # sends first (its handshake) must reach the TLS layer, not the stream's buffer.
        if self._handshakes is not None:
            writer.transport.pause_reading()  # type: ignore[attr-defined]
        return self._on_connect(reader, writer)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        assert self._door is not None
        # Counted before the handshake: connections in it hold a descriptor too.
        refusal = self._door.refusal(len(self._connections) + self._handshaking)
        if self._handshakes is not None:
            self._handshaking += 1
            try:
                failed = await self._handshakes.secure(writer)
            finally:
                self._handshaking -= 1
            if failed is not None:
                self.dispatcher.counters[Stat.TLS_HANDSHAKE_FAILURES] += 1
                return
        if refusal is not None:
            self._door.refuse(writer, refusal, self.dispatcher.counters)
            return
        connection = TcpConnection(reader, writer, self.dispatcher, self.admission, self._partial)
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = connection
        try:
            await connection.serve()
        finally:
            self._connections.pop(task, None)

    async def _shutdown(
        self,
        server: asyncio.Server,
        udp: UdpEndpoint | None,
        udp_transport: asyncio.DatagramTransport | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.grace
        self._storage_deadline = deadline + STORAGE_MARGIN
        self._stopping = True
        server.close()
        if udp is not None:
            udp.stop_accepting()
        udp_tasks = set(udp.tasks) if udp is not None else set()
        log.info(
            "server_stopping",
            connections=len(self._connections),
            jobs_running=self.runner.counters.running,
            udp_requests=len(udp_tasks),
            grace=self.settings.grace,
        )
        for connection in self._connections.values():
            connection.stop_reading()
        work = set(self._connections) | udp_tasks
        late: set[asyncio.Task[None]] = set()
        if work:
            _, late = await asyncio.wait(work, timeout=self.settings.grace)
        abandoned = {"connections_cut": 0, "udp_requests_dropped": 0, "jobs_cancelled": 0}
        if late:
            # Counted before the kill: a killed child's job ends (worker_crashed) at once.
            abandoned["jobs_cancelled"] = self.runner.counters.running
            self.runner.kill_all()
            abandoned["connections_cut"] = sum(1 for task in late if task in self._connections)
            abandoned["udp_requests_dropped"] = sum(1 for task in late if task in udp_tasks)
            for task in late:
                task.cancel()
            await asyncio.wait(late, timeout=CANCEL_WAIT)
            log.warning("grace_expired", grace=self.settings.grace, **abandoned)
        if udp_transport is not None:
            udp_transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=CANCEL_WAIT)
        # The counters say the rest: udp_datagrams_refused_stopping, jobs_crashed, ...
        log.info(
            "server_stopped",
            seconds=round(loop.time() - started, 3),
            **abandoned,
            **self.dispatcher.stats().counters,
        )


async def run(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Run the daemon until SIGINT or SIGTERM; ``on_ready`` is called once it listens."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    app = App(settings)
    signals = _Signals(stop, app)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signals.received, signum)
    if settings.log_file is not None or settings.daemon:
        # A daemon has no terminal to hang up: SIGHUP means "reopen the log", never "die".
        loop.add_signal_handler(signal.SIGHUP, _reopen_log, settings.log_file)
    announce = asyncio.create_task(_when_started(app, on_ready))
    try:
        await app.serve(stop)
    finally:
        announce.cancel()
    if app.abandoned:
        # A close stuck in a driver would hold the loop's own cleanup (it waits for every
        # task) as long as it held the close: exit now, saying so.
        signals.exit(1, "exit_with_storage_abandoned", abandoned=app.abandoned)


async def _when_started(app: App, on_ready: Callable[[], None] | None) -> None:
    await app.started.wait()
    if on_ready is not None:
        on_ready()


def _reopen_log(path: str | None) -> None:
    """SIGHUP: logrotate moved the log file away; write to a new one at ``path``."""
    if path is None:
        log.info("log_reopen_skipped", reason="no --log-file")
        return
    try:
        redirect_output(path)
    except OSError as exc:  # keep writing where we were: better than nowhere
        log.error("log_reopen_failed", path=path, error=str(exc))
        return
    log.info("log_reopened", path=path)


class _Signals:
    """The first SIGINT/SIGTERM stops the server gracefully; the second exits at once.

    The first also starts a watchdog thread: if the graceful path has not ended the
    process ``grace`` plus ``WATCHDOG_MARGIN`` seconds later (a close stuck in a driver, a
    thread that does not end), the watchdog does, so shutdown is bounded whatever hangs.
    """

    def __init__(self, stop: asyncio.Event, app: App) -> None:
        self.stop = stop
        self.app = app

    def received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            self.stop.set()  # first: nothing after this may keep the server from stopping
            log.info("signal_received", signal=name)
            watchdog = threading.Timer(
                self.app.settings.grace + WATCHDOG_MARGIN, self._overran, args=(name,)
            )
            watchdog.daemon = True
            watchdog.start()
            return
        # 128 + the signal, as a shell reports a process killed by it (130, 143).
        self.exit(128 + signum, "forced_exit", signal=name)

    def _overran(self, name: str) -> None:
        self.exit(1, "shutdown_overran", signal=name)

    def exit(self, status: int, event: str, **details: object) -> None:
        """Log ``event``, kill the job children, and end the process now, no cleanup."""
        runner = self.app.runner
        jobs = runner.counters.running
        killed = runner.kill_all()  # the forkserver's children would outlive us otherwise
        log.error(event, status=status, jobs_abandoned=jobs, children_killed=killed, **details)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(status)


#: Query parameters whose value is a secret, by a part of their name (``password``,
#: ``sslpassword``, ``passfile``'s neighbours, ``token``, ``secret``, ``api_key``...).
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key|auth|credential", re.IGNORECASE)


def _redact(url: str) -> str:
    """The URL for the log: a password in the userinfo, and the value of any query
    parameter that looks like a secret, replaced by ``***``; the rest kept for the reader.

    Done on the text, not by a URL parser, so that a malformed URL (which a parser may
    refuse, or read differently from asyncpg) is still redacted, erring on the safe side.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The userinfo ends at the last "@": an unescaped password may hold "@", "/", "?" or
    # "#", a user name none of them. An "@" further on (an e-mail in the query) makes this
    # redact more, not less.
    credentials, at, location = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    if at and colon and not re.search(r"[/?#]", user):
        return f"{scheme}{sep}{user}:***@{_PARAMETER.sub(_redact_parameter, location)}"
    # Every "name=value" after a "?", "&", ";" or "#": a parameter that looks like a
    # secret is redacted wherever the query seems to start.
    return f"{scheme}{sep}{_PARAMETER.sub(_redact_parameter, rest)}"


_PARAMETER = re.compile(r"([?&;#])([^=?&;#]*)=([^&;#]*)")


def _redact_parameter(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if value and _SECRET_KEY.search(unquote_plus(name)):
        return f"{separator}{name}=***"
    return match.group(0)
