"""The TCP listener: one reader loop per connection, one task per job."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import structlog

from forkwire.protocol import (
    Bye,
    Error,
    FrameDecoder,
    FrameTooLarge,
    Message,
    ProtocolError,
    decode_message,
    pack,
)
from forkwire.server.dispatch import SLOW_REQUESTS, Dispatcher, StorageUnavailable

log = structlog.get_logger("forkwire.tcp")

#: Requests one connection may have in flight before the server stops reading from it;
#: TCP flow control then pushes back on the client instead of the server buffering jobs.
MAX_INFLIGHT = 64
_READ_SIZE = 256 * 1024
_conn_ids = itertools.count(1)


class TcpConnection:
    """Serves one client until it says ``bye``, disconnects, or the server stops."""

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
        self._pending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_INFLIGHT)
        self._read_task: asyncio.Task[str] | None = None

    async def serve(self) -> None:
        """Read and answer frames; on the way out, answer what is in flight, then close."""
        peer = self.writer.get_extra_info("peername")
        with structlog.contextvars.bound_contextvars(peer=_format_peer(peer), conn=self.id):
            self.counters["connections_total"] += 1
            self.counters["connections_open"] += 1
            log.info("connection_opened")
            self._read_task = asyncio.create_task(self._read_loop())
            reason = "closed"
            try:
                reason = await self._read_task
            except asyncio.CancelledError:
                if self._read_task.cancelled():
                    reason = "server_stopping"  # stop_reading(): finish what is in flight
                else:
                    raise
            except (ConnectionError, OSError) as exc:
                reason = f"transport: {exc}"
            except Exception:
                log.exception("connection_failed")
                reason = "internal_error"
            finally:
                await self._finish_pending()
                await self._close()
                self.counters["connections_open"] -= 1
                log.info("connection_closed", reason=reason)

    def stop_reading(self) -> None:
        """Take no new requests; jobs already running still get their answers."""
        if self._read_task is not None:
            self._read_task.cancel()

    async def _read_loop(self) -> str:
        decoder = FrameDecoder(max_frame=self.dispatcher.settings.max_frame)
        while True:
            data = await self.reader.read(_READ_SIZE)
            if not data:
                try:
                    decoder.eof()
                except ProtocolError as exc:
                    log.warning("truncated_stream", code=exc.code, detail=exc.message)
                return "eof"
            try:
                payloads = decoder.feed(data)
            except FrameTooLarge as exc:
                # The body is never read: the stream position is lost, so reply and close.
                self.counters["frames_rejected"] += 1
                await self._send(Error(code=exc.code, message=exc.message))
                return "frame_too_large"
            for payload in payloads:
                self.counters["frames_in"] += 1
                if await self._handle(payload):
                    return "bye"
            if decoder.error is not None:  # a bad header came after good frames
                self.counters["frames_rejected"] += 1
                await self._send(Error(code=decoder.error.code, message=decoder.error.message))
                return decoder.error.code

    async def _handle(self, payload: bytes) -> bool:
        """Answer one frame; True when the conversation is over."""
        try:
            message = decode_message(payload)
        except ProtocolError as exc:
            self.counters["frames_rejected"] += 1
            log.info("bad_frame", code=exc.code, detail=exc.message[:200])
            await self._send(Error(code=exc.code, message=exc.message, ref=exc.ref))
            return False
        if isinstance(message, SLOW_REQUESTS):
            # The slot is taken here, in the reader loop, so a flood of requests stops the
            # reading instead of piling up tasks; the task gives it back when it is done.
            await self._slots.acquire()
            task = asyncio.create_task(self._answer(message))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        elif isinstance(message, Bye):
            await self._finish_pending()
            await self._send(Bye())
            return True
        else:
            await self._send(self.dispatcher.answer_now(message))
        return False

    async def _answer(self, request: Message) -> None:
        try:
            reply = await self.dispatcher.answer(request)
        finally:
            self._slots.release()
        if reply is None:
            return
        with contextlib.suppress(ConnectionError, OSError):
            await self._send(reply)
        if isinstance(reply, Error) and reply.code == StorageUnavailable.code:
            # Nothing was acked. Closing makes the client reconnect and resend from its
            # outbox, instead of holding network slots for acks that will never come.
            self.writer.close()

    async def _send(self, message: Message) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(pack(message))
        self.counters["frames_out"] += 1
        await self.writer.drain()

    async def _finish_pending(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            self.writer.close()
            await self.writer.wait_closed()


def _format_peer(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
