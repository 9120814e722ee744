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
    Greeted,
    Rejected,
    RequestReceived,
    ServerConnection,
    Stat,
    State,
)
from forkwire.server.dispatch import Dispatcher

log = structlog.get_logger("forkwire.tcp")

#: Requests one connection may have in flight before the server stops reading from it;
#: TCP flow control then pushes back on the client instead of the server buffering jobs.
MAX_INFLIGHT = 64
_READ_SIZE = 256 * 1024
_conn_ids = itertools.count(1)


class TcpConnection:
    """Serves one client until the conversation ends or the server stops."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dispatcher: Dispatcher,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.dispatcher = dispatcher
        self.counters = dispatcher.counters
        self.id = next(_conn_ids)
        self.conversation = ServerConnection(
            dispatcher.welcome(), max_frame=dispatcher.settings.max_frame
        )
        self._counted = (0, 0, 0)  # the conversation's frame counts already in counters
        self._pending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_INFLIGHT)
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
                    # The slot is taken here, in the reader loop, so a flood of requests
                    # stops the reading instead of piling up tasks.
                    await self._slots.acquire()
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
            reply = await self.dispatcher.answer(event.message)
        finally:
            self._slots.release()
        self.conversation.reply(event.handle, reply)
        if self.conversation.state is not State.OPEN:
            self.stop_reading()  # a closing error: the conversation reads no more
        with contextlib.suppress(ConnectionError, OSError):
            await self._flush()

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
