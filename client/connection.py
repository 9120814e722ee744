"""The client's one I/O shell: a TCP stream of frames, opened with ``hello``.

Every client (calc, sensors, replay, profiles, demo) builds on this; none of them touches
a socket or the frame codec directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType

from forkwire.protocol import (
    Bye,
    Error,
    FrameDecoder,
    Hello,
    Message,
    ProtocolError,
    Welcome,
    decode_message,
    pack,
)

#: Replies can be larger than requests (a job of 1,000 failing expressions answers with
#: 1,000 messages), so the client accepts more than the server's default max_frame.
CLIENT_MAX_FRAME = 64 * 1024 * 1024
_READ_SIZE = 256 * 1024


class ConnectError(Exception):
    """The server could not be reached or did not greet us properly."""


class ConnectionLost(Exception):
    """The server closed the connection, or broke the protocol, mid-conversation."""


class Connection:
    """A framed, greeted connection to a forkwire server."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, welcome: Welcome
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame=CLIENT_MAX_FRAME)
        self._ready: deque[bytes] = deque()
        self.welcome = welcome

    @classmethod
    async def open(
        cls, host: str, port: int, *, client: str = "forkwire", connect_timeout: float = 10.0
    ) -> Connection:
        """Connect and exchange ``hello``/``welcome``.

        Raises:
            ConnectError: unreachable, refused, timed out, or not a forkwire server.
        """
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            raise ConnectError(f"cannot connect to {host}:{port}: {reason}") from None
        connection = cls(reader, writer, Welcome(server="?", max_frame=0))
        try:
            await connection.send(Hello(client=client))
            reply = await asyncio.wait_for(connection.recv(), timeout=connect_timeout)
        except (ConnectionLost, OSError, TimeoutError) as exc:
            await connection.close()
            raise ConnectError(f"{host}:{port} did not answer hello: {exc}") from None
        if not isinstance(reply, Welcome):
            await connection.close()
            raise ConnectError(f"{host}:{port} answered hello with {reply.type!r}")
        connection.welcome = reply
        return connection

    async def send(self, message: Message) -> None:
        """Write one frame and wait until the transport takes it (flow control)."""
        self._writer.write(pack(message))
        await self._writer.drain()

    def send_nowait(self, message: Message) -> None:
        """Queue one frame without waiting; call :meth:`drain` now and then."""
        self._writer.write(pack(message))

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        await self._writer.drain()

    async def recv(self) -> Message:
        """Return the next message from the server.

        Raises:
            ConnectionLost: the server closed the connection or sent a bad frame.
        """
        while not self._ready:
            data = await self._reader.read(_READ_SIZE)
            if not data:
                raise ConnectionLost("the server closed the connection")
            try:
                self._ready.extend(self._decoder.feed(data))
            except ProtocolError as exc:
                raise ConnectionLost(f"bad frame from the server: {exc}") from None
        payload = self._ready.popleft()
        try:
            return decode_message(payload)
        except ProtocolError as exc:
            raise ConnectionLost(f"bad message from the server: {exc}") from None

    async def request(self, message: Message) -> Message:
        """Send one request and return the next message (for one-at-a-time use)."""
        await self.send(message)
        return await self.recv()

    async def goodbye(self, wait: float = 30.0) -> None:
        """Say ``bye`` and wait for the server to answer it (all earlier replies first)."""
        with contextlib.suppress(ConnectionLost, OSError, TimeoutError):
            await self.send(Bye())
            async with asyncio.timeout(wait):
                while not isinstance(await self.recv(), Bye):
                    pass

    async def close(self) -> None:
        """Close the transport (no ``bye``)."""
        with contextlib.suppress(OSError):
            self._writer.close()
            await self._writer.wait_closed()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def describe_error(error: Error) -> str:
    """One line for a server ``error`` frame."""
    return f"{error.code}: {error.message}"
