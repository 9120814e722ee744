"""Start, serve, and shut down in order.

Shutdown follows uvicorn's order: stop accepting, ask every connection to stop reading,
give running jobs ``grace`` seconds to answer, kill the children that are left, cancel
what remains, then close resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from forkwire.protocol import Stat
from forkwire.server.admission import Admission
from forkwire.server.config import Settings
from forkwire.server.dispatch import Dispatcher
from forkwire.server.ingest import Writer
from forkwire.server.jobs import JobRunner
from forkwire.server.sinks import Sinks
from forkwire.server.storage import Repository, open_repository, open_sink
from forkwire.server.storage.base import SCHEMA_VERSION
from forkwire.server.tcp import Budget, Door, TcpConnection
from forkwire.server.udp import kernel_udp_stats, open_udp

log = structlog.get_logger("forkwire.server")


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
        )
        self.dispatcher = Dispatcher(settings, self.runner)
        self.admission = Admission(
            settings.workers, settings.max_queued_jobs, settings.jobs_per_connection
        )
        self._door: Door | None = None
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

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        async with contextlib.AsyncExitStack() as resources:
            await self._open_storage(resources)
            await self._serve(stop)

    async def _open_storage(self, resources: contextlib.AsyncExitStack) -> None:
        store_url, *sink_urls = self.settings.db
        sinks = None
        if sink_urls:
            sinks = Sinks(
                [
                    (_redact(url), await open_sink(url, self.settings.durability))
                    for url in sink_urls
                ]
            )
            sinks.start()
            resources.push_async_callback(sinks.close)
        repo = await open_repository(store_url, self.settings.durability)
        resources.push_async_callback(repo.close)
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
        )
        await writer.start()
        # Registered after the store and the sinks, so it runs first: flush, then close.
        resources.push_async_callback(writer.close)
        self.repository = repo
        self.dispatcher.writer = writer
        self.dispatcher.sinks = sinks
        log.info(
            "storage_opened",
            store=_redact(store_url),
            sinks=[_redact(u) for u in sink_urls],
            durability=self.settings.durability,
        )

    async def _serve(self, stop: asyncio.Event) -> None:
        settings = self.settings
        server = await asyncio.start_server(
            self._on_connect, settings.host, settings.port, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._door = Door(settings.max_connections, settings.workers)
        udp = None
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
        )
        self.started.set()
        try:
            await stop.wait()
        finally:
            if udp is not None:
                udp.stop_accepting()
            await self._shutdown(server)
            if udp is not None:
                await udp.drain(self.settings.grace)
                udp_transport.close()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.close()
            return
        assert self._door is not None
        refusal = self._door.refusal(len(self._connections))
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

    async def _shutdown(self, server: asyncio.Server) -> None:
        self._stopping = True
        server.close()
        running = self.runner.counters.running
        log.info("server_stopping", connections=len(self._connections), jobs_running=running)
        for connection in self._connections.values():
            connection.stop_reading()
        tasks = set(self._connections)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.grace)
            if late:
                killed = self.runner.kill_all()
                log.warning("grace_expired", connections=len(late), children_killed=killed)
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout=5.0)
        log.info("server_stopped", **self.dispatcher.stats().counters)


async def run(settings: Settings) -> None:
    """Run the daemon until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    app = App(settings)
    await app.serve(stop)


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    stop.set()  # first: nothing after this may keep the server from stopping
    log.info("signal_received", signal=signal.Signals(signum).name)


def _redact(url: str) -> str:
    # A PostgreSQL URL may carry a password; the log gets everything but that.
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        credentials = credentials.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{credentials}{at}{location}"
