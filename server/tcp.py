"""The TCP listener's connections: a thin loop around ``ServerConnection``.

The conversation object decides what every frame means and what is owed to the client;
this shell reads bytes into it, runs the requests it hands out (one task each), and writes
what it says to write. Nothing here knows a rule of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import resource
from collections import Counter
from typing import cast

import structlog

from forkwire.protocol import (
    Calc,
    Error,
    ErrorCode,
    Greeted,
    Rejected,
    Reply,
    RequestReceived,
    ServerConnection,
    Stat,
    State,
    pack,
)
from forkwire.server.admission import Admission
from forkwire.server.dispatch import Dispatcher

log = structlog.get_logger("forkwire.tcp")

_READ_SIZE = 256 * 1024
#: A connection's stream reader pauses its transport past twice this. asyncio's 64 KiB
#: let each of a thousand connections that sent most of a frame hold ~400 KiB beyond the
#: partial-frame budget (measured: 1,000 such connections, 530 MB -> 370 MB); a read of
#: a big frame still takes whole chunks, with a pause and resume around each.
READER_LIMIT = 16 * 1024
#: A repeated warning (refused connections) is logged at most this often, with a count.
_LOG_EVERY = 10.0
_conn_ids = itertools.count(1)


class TcpConnection:
    """Serves one client until the conversation ends or the server stops."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dispatcher: Dispatcher,
        admission: Admission | None = None,
        partial: Budget | None = None,
    ) -> None:
        settings = dispatcher.settings
        self.reader = reader
        self.writer = writer
        self.dispatcher = dispatcher
        self.counters = dispatcher.counters
        self.admission = admission or Admission(
            dispatcher.runner.workers, settings.max_queued_jobs, settings.jobs_per_connection
        )
        self.partial = partial or Budget(settings.max_partial)
        self._partial_held = 0  # this connection's share of it
        self.id = next(_conn_ids)
        self.conversation = ServerConnection(
            dispatcher.welcome(), max_frame=settings.max_frame, token=dispatcher.token
        )
        self._counted = (0, 0, 0)  # the conversation's frame counts already in counters
        self._pending: set[asyncio.Task[None]] = set()
        self.conversation.tally = dispatcher.tally  # one per server, for the metrics
        # Requests handed out and not answered, and their bytes: at either bound the reader
        # loop stops, and TCP flow control pushes back on the client instead of the server
        # holding decoded jobs (a list of short strings costs ~10x its JSON).
        self._max_pipeline = settings.max_pipeline
        self._max_unsent = settings.max_unsent
        self._held = 0
        self._held_bytes = 0
        self._answered = asyncio.Event()
        # drain() waits only above the transport's high-water mark, so it must not exceed
        # max_unsent or _room() could spin.
        writer.transport.set_write_buffer_limits(high=min(64 * 1024, self._max_unsent))
        self._read_task: asyncio.Task[None] | None = None
        self._write_scheduled = False
        # The clocks (loop time) the timeouts run on; the rules they end are protocol's.
        self._hello_timeout = settings.hello_timeout
        self._idle_timeout = settings.idle_timeout
        self._frame_timeout = settings.frame_timeout
        self._opened_at = self._active_at = self._answered_at = self._frame_at = 0.0
        self._frame: int | None = None  # the frame partly received, by number
        self._timer: asyncio.Timeout | None = None  # the read's, while it waits
        self._stalled = False

    async def serve(self) -> None:
        """Read and answer frames; on the way out, answer what is owed, then close."""
        peer = self.writer.get_extra_info("peername")
        with structlog.contextvars.bound_contextvars(peer=_format_peer(peer), conn=self.id):
            self.counters[Stat.CONNECTIONS_TOTAL] += 1
            self.counters[Stat.CONNECTIONS_OPEN] += 1
            log.info("connection_opened")
            self._read_task = asyncio.create_task(self._read_loop())
            reason = None
            try:
                await self._read_task
            except asyncio.CancelledError:
                if not self._read_task.cancelled():
                    raise
                # stop_reading(), or the conversation stopped reading on a reply
                reason = self.conversation.end_reason or "server_stopping"
            except (ConnectionError, OSError) as exc:
                reason = f"transport: {exc}"
            except Exception:
                log.exception("connection_failed")
                reason = "internal_error"
            finally:
                self.partial.add(-self._partial_held)
                self._partial_held = 0
                await self._finish_pending()
                await self._close()
                self.counters[Stat.CONNECTIONS_OPEN] -= 1
                log.info("connection_closed", reason=reason or self.conversation.end_reason)

    def stop_reading(self) -> None:
        """Take no new requests; the ones already running still get their answers."""
        if self._read_task is not None:
            self._read_task.cancel()

    async def _read_loop(self) -> None:
        conversation = self.conversation
        loop = asyncio.get_running_loop()
        self._opened_at = self._active_at = self._answered_at = loop.time()
        while conversation.state is State.OPEN:
            try:
                data = await self._read()
            except TimeoutError:
                self._time_out()
                await self._flush()
                break
            self._active_at = now = loop.time()
            conversation.receive_data(data)
            self._count_partial()
            frame = conversation.frame_in_progress
            if frame != self._frame:
                self._frame = frame
                self._frame_at = now  # a new frame began: its clock starts
            while (event := conversation.next_event()) is not None:
                if isinstance(event, RequestReceived):
                    # Both waits are here, in the reader loop, so a flood of requests, or
                    # a client that does not read its replies, stops the reading instead
                    # of piling up tasks and reply bytes.
                    await self._take_request(event.size)
                    task = asyncio.create_task(self._answer(event))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)
                elif isinstance(event, Rejected):
                    if event.error.code == ErrorCode.UNAUTHORIZED:
                        self.counters[Stat.CONNECTIONS_UNAUTHORIZED] += 1
                    # The message is the server's own words, never the client's token.
                    log.info("bad_frame", code=event.error.code, detail=event.error.message[:200])
                elif isinstance(event, Greeted):
                    log.debug("hello", client=event.hello.client[:80])
            await self._flush()

    async def _answer(self, event: RequestReceived) -> None:
        try:
            message = event.message
            if isinstance(message, Calc):
                reply = await self._calc(message)
            else:
                reply = await self.dispatcher.answer(message)
            self.conversation.reply(event.handle, reply)
        finally:
            # Only now: until the reply is in the conversation's bytes, the unsent count
            # does not see it, and holding the request is what bounds it.
            self._held -= 1
            self._held_bytes -= event.size
            self._answered.set()
            self._answered_at = asyncio.get_running_loop().time()
            if self._timer is not None:
                # The idle clock may start now that nothing is in flight.
                self._timer.reschedule(self._deadline())
        if self.conversation.state is not State.OPEN:
            self.stop_reading()  # a closing error: the conversation reads no more
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush()

    async def _read(self) -> bytes:
        """The next bytes from the client, or TimeoutError when its time is up."""
        async with asyncio.timeout_at(self._deadline()) as timer:
            self._timer = timer
            try:
                # Thousands of connections each holding most of a frame would hold their
                # sum: past the server's budget, one in a frame reads no more (TCP holds
                # the rest) until others complete or time out. Its frame clock runs on.
                if self.conversation.in_frame and self.partial.over():
                    await self._wait_for_partial_room()
                return await self.reader.read(_READ_SIZE)
            finally:
                self._timer = None

    async def _wait_for_partial_room(self) -> None:
        # Paused here, not when the reader's buffer fills (two chunks later): what the
        # transport holds for us is then at most what already arrived.
        # A stream's transport reads too (typeshed types the writer's as write-only).
        transport = cast(asyncio.Transport, self.writer.transport)
        transport.pause_reading()
        try:
            while self.partial.over():
                await self.partial.wait()
        finally:
            if not transport.is_closing():
                transport.resume_reading()

    def _count_partial(self) -> None:
        held = self.conversation.bytes_buffered if self.conversation.state is State.OPEN else 0
        self.partial.add(held - self._partial_held)
        self._partial_held = held

    def _deadline(self) -> float | None:
        """When the client's time is up, by the clock that applies now; None: no clock
        while it has requests in flight (the server, not the client, is taking time)."""
        conversation = self.conversation
        deadlines = []
        if self._frame is not None:
            deadlines.append(self._frame_at + self._frame_timeout)
        if conversation.frames_received == 0:
            deadlines.append(self._opened_at + self._hello_timeout)
        elif self._frame is None and conversation.owed == 0:
            deadlines.append(max(self._active_at, self._answered_at) + self._idle_timeout)
        return min(deadlines, default=None)

    def _time_out(self) -> None:
        conversation = self.conversation
        first = conversation.frames_received == 0
        if conversation.in_frame:
            code = ErrorCode.FRAME_TIMEOUT
            text = (
                f"the first frame did not arrive whole within {self._hello_timeout} s"
                if first
                else f"a frame did not arrive whole within frame_timeout ({self._frame_timeout} s)"
            )
        else:
            code = ErrorCode.IDLE_TIMEOUT
            text = (
                f"no hello or request within hello_timeout ({self._hello_timeout} s)"
                if first
                else f"nothing received for idle_timeout ({self._idle_timeout} s)"
            )
        conversation.time_out(code, text)
        self.counters[Stat.CONNECTIONS_TIMED_OUT] += 1
        log.info("connection_timed_out", code=str(code))

    async def _drain(self) -> None:
        """Wait for the transport to take our bytes; a client that reads none of them for
        ``idle_timeout`` is cut off (its replies and requests would be held forever)."""
        writer = self.writer
        if writer.is_closing():
            return
        try:
            async with asyncio.timeout(self._idle_timeout):
                await writer.drain()
        except TimeoutError:
            if not self._stalled:
                self._stalled = True
                self.counters[Stat.CONNECTIONS_TIMED_OUT] += 1
                log.info("connection_stalled", unsent=self._unsent())
            writer.transport.abort()

    async def _take_request(self, size: int) -> None:
        """Wait until the client reads its replies and the pipeline has room for one more."""
        while True:
            await self._room()
            if self._held == 0 or (
                self._held < self._max_pipeline and self._held_bytes + size <= self._max_unsent
            ):
                break
            self._answered.clear()
            await self._answered.wait()
        self._held += 1
        self._held_bytes += size

    async def _calc(self, message: Calc) -> Reply | None:
        """Run a job when a worker slot is this connection's turn and its client reads."""
        admission = self.admission
        if admission.full():
            self.counters[Stat.JOBS_REFUSED] += 1
            return Error(
                code=ErrorCode.BUSY,
                message=f"{admission.queued} jobs wait for a worker already: try again later",
                ref=message.id,
            )
        while True:
            await self._room()
            await admission.acquire(self)
            # The room may have gone while we waited for the slot (other jobs of ours
            # answered meanwhile): a slot is never held while the client does not read.
            if self._unsent() <= self._max_unsent or self.writer.is_closing():
                break
            admission.release(self)
        try:
            return await self.dispatcher.answer(message)
        finally:
            admission.release(self)

    def _unsent(self) -> int:
        """Reply bytes the client has not taken: queued here, and in the transport."""
        return self.conversation.bytes_to_send + self.writer.transport.get_write_buffer_size()

    async def _room(self) -> None:
        """Wait until the unsent replies are within ``max_unsent`` (backpressure)."""
        writer = self.writer
        while self._unsent() > self._max_unsent and not writer.is_closing():
            self._write()
            try:
                await self._drain()
            except (ConnectionError, OSError):
                return  # the transport is gone: the caller sees it closing
            if self._unsent() > self._max_unsent and not writer.is_closing():
                # Only if the transport never paused (it should have): do not spin.
                await asyncio.sleep(0.01)

    async def _flush(self) -> None:
        """Write what the conversation has to send, once per turn of the event loop.

        Replies that complete together (a group commit acks several frames at once) leave
        in one write, one system call, instead of one each; the wait for the transport
        (backpressure) is the caller's, as before.
        """
        self._count()
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write)
        await self._drain()

    def _write(self) -> None:
        self._write_scheduled = False
        self._count()
        data = self.conversation.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
        if self.conversation.state is State.CLOSED:
            self.writer.close()

    def _count(self) -> None:
        """Add the conversation's new frame counts to the server's counters."""
        conversation = self.conversation
        counted = (
            conversation.frames_received,
            conversation.frames_sent,
            conversation.frames_rejected,
        )
        for name, now, before in zip(
            (Stat.FRAMES_IN, Stat.FRAMES_OUT, Stat.FRAMES_REJECTED),
            counted,
            self._counted,
            strict=True,
        ):
            self.counters[name] += now - before
        self._counted = counted

    async def _finish_pending(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError):
            self._write()  # now, not at the next turn: the transport closes next
            await self._drain()

    async def _close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.close()
            try:
                # close() waits for the buffer to be written: a client that reads none of
                # it would hold the connection and its bytes forever.
                async with asyncio.timeout(self._idle_timeout):
                    await self.writer.wait_closed()
            except TimeoutError:
                self.writer.transport.abort()


def _format_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class Budget:
    """Bytes held server-wide against a limit, with a wait for room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._room = asyncio.Event()
        self._room.set()

    def over(self) -> bool:
        return self.held >= self.limit

    def add(self, delta: int) -> None:
        self.held += delta
        if self.held < self.limit:
            self._room.set()
        else:
            self._room.clear()

    async def wait(self) -> None:
        """Until the held bytes drop below the limit (then check again: others woke too)."""
        await self._room.wait()


class Door:
    """Who gets in: at most ``max_connections``, and never so many that the descriptors
    left cannot serve the open ones.

    Under ``ulimit -n`` a full table of idle connections used to fail the job in flight
    (its pipe could not be made) and lock every new client out unseen. Here the
    descriptors the server opened before it listened, and a reserve for each worker's job
    (pipe, sentinel) and for the store, are kept: past the rest, a new connection is told
    ``busy`` and closed, which costs its descriptor only for a moment.
    """

    def __init__(self, max_connections: int, workers: int) -> None:
        self.max_connections = max_connections
        self._base = _open_descriptors()
        self._reserve = 32 + 8 * workers
        self._last_logged = float("-inf")
        self._unlogged = 0
        budget = self.descriptor_budget()
        if budget is not None and budget < max_connections:
            log.warning(
                "fd_limit",
                max_connections=max_connections,
                connections_possible=budget,
                detail="RLIMIT_NOFILE allows fewer connections than max_connections",
            )

    def descriptor_budget(self) -> int | None:
        """Connections the descriptor limit leaves room for now; None: no limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return None
        return max(0, soft - self._base - self._reserve)

    def refusal(self, open_now: int) -> str | None:
        """Why a new connection is refused while ``open_now`` are served; None: let in."""
        if open_now >= self.max_connections:
            return "max_connections"
        budget = self.descriptor_budget()  # read each time: prlimit can change it
        if budget is not None and open_now >= budget:
            return "file_descriptors"
        return None

    def refuse(self, writer: asyncio.StreamWriter, reason: str, counters: Counter[str]) -> None:
        """Answer ``busy`` and close; log it once, then at most every ``_LOG_EVERY`` s."""
        counters[Stat.CONNECTIONS_REFUSED] += 1
        text = (
            "too many connections"
            if reason == "max_connections"
            else "too few file descriptors left"
        )
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(pack(Error(code=ErrorCode.BUSY, message=f"{text}: try again later")))
            writer.close()  # after the frame is written
        self._unlogged += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_logged >= _LOG_EVERY:
            log.warning(
                "connections_refused",
                reason=reason,
                refused=self._unlogged,
                max_connections=self.max_connections,
                connections_possible=self.descriptor_budget(),
            )
            self._last_logged = now
            self._unlogged = 0


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return 64
