"""The TCP listener's connections: a thin loop around ``ServerConnection``.

The conversation object decides what every frame means and what is owed to the client;
this shell reads bytes into it, runs the requests it hands out (one task each), and writes
what it says to write. Nothing here knows a rule of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import structlog

from forkwire.protocol import (
    Calc,
    Greeted,
    Rejected,
    Reply,
    RequestReceived,
    ServerConnection,
    Stat,
    State,
)
from forkwire.server.admission import Admission
from forkwire.server.dispatch import Dispatcher

log = structlog.get_logger("forkwire.tcp")

_READ_SIZE = 256 * 1024
_conn_ids = itertools.count(1)


class TcpConnection:
    """Serves one client until the conversation ends or the server stops."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dispatcher: Dispatcher,
        admission: Admission | None = None,
    ) -> None:
        settings = dispatcher.settings
        self.reader = reader
        self.writer = writer
        self.dispatcher = dispatcher
        self.counters = dispatcher.counters
        self.admission = admission or Admission(dispatcher.runner.workers, 2**31)
        self.id = next(_conn_ids)
        self.conversation = ServerConnection(dispatcher.welcome(), max_frame=settings.max_frame)
        self._counted = (0, 0, 0)  # the conversation's frame counts already in counters
        self._pending: set[asyncio.Task[None]] = set()
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
        while conversation.state is State.OPEN:
            conversation.receive_data(await self.reader.read(_READ_SIZE))
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
        if self.conversation.state is not State.OPEN:
            self.stop_reading()  # a closing error: the conversation reads no more
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush()

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
                await writer.drain()
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
        if not self.writer.is_closing():
            await self.writer.drain()

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
            if not self.writer.is_closing():
                await self.writer.drain()

    async def _close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.close()
            await self.writer.wait_closed()


def _format_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
