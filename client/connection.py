"""The client's one TCP shell: a thin loop around ``ClientConnection``, opened with ``hello``.

Every client (calc, sensors, replay, profiles, report, demo) builds on this; none of them
touches a socket or the frame codec directly, and the rules of the conversation are the
protocol's.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Final

from forkwire.client.errors import ConnectError, ConnectionLost
from forkwire.protocol import (
    Bye,
    ClientConnection,
    Error,
    Hello,
    LocalProtocolError,
    ProtocolError,
    Reply,
    Request,
    State,
    Welcome,
)

#: Where the commands look for a server unless told otherwise, on the protocol's
#: DEFAULT_PORT.
DEFAULT_HOST: Final = "127.0.0.1"

_READ_SIZE: Final = 256 * 1024

#: Seconds a server has to answer ``hello``: a forkwire server answers at once, so a peer
#: that stays silent this long (an HTTP server waiting for a request line) is not one.
HELLO_TIMEOUT: Final = 5.0


class BadFrame(ConnectionLost):
    """The server sent bytes that are not a forkwire frame."""

    def __init__(self, problem: str, sent: bytes = b"") -> None:
        super().__init__(f"bad frame from the server: {problem}")
        #: For a first answer: what the peer sent, which says what it is (HTTP, SSH...).
        self.detail = (
            f"it answered with {sent!r}..., not a forkwire frame"
            if sent
            else f"it answered with a bad frame ({problem})"
        )


class Connection:
    """A framed, greeted connection to a forkwire server."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.address = address
        self.conversation = ClientConnection()

    @property
    def welcome(self) -> Welcome:
        """The server's welcome (the connection is open only once it came)."""
        assert self.conversation.welcome is not None
        return self.conversation.welcome

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        client: str = "forkwire",
        connect_timeout: float = 10.0,
        hello_timeout: float = HELLO_TIMEOUT,
    ) -> Connection:
        """Connect and exchange ``hello``/``welcome``.

        Raises:
            ConnectError: unreachable, refused, timed out, or not a forkwire server.
        """
        address = f"{host}:{port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            raise ConnectError(f"cannot connect to {address}: {reason}") from None
        connection = cls(reader, writer, address)
        try:
            await connection.send(Hello(client=client))
            reply = await asyncio.wait_for(connection.recv(), timeout=hello_timeout)
        except TimeoutError:
            await connection.close()
            raise ConnectError(
                f"{address} is not a forkwire server: no answer to hello within {hello_timeout:g} s"
            ) from None
        except BadFrame as exc:
            await connection.close()
            raise ConnectError(f"{address} is not a forkwire server: {exc.detail}") from None
        except (ConnectionLost, OSError) as exc:
            await connection.close()
            raise ConnectError(f"{address} did not answer hello: {exc}") from None
        if not isinstance(reply, Welcome):
            await connection.close()
            detail = describe_error(reply) if isinstance(reply, Error) else repr(reply.type)
            raise ConnectError(f"{address} answered hello with {detail}")
        return connection

    async def send(self, message: Request) -> None:
        """Write one frame and wait until the transport takes it (flow control)."""
        self.send_nowait(message)
        await self._writer.drain()

    def send_nowait(self, message: Request) -> None:
        """Queue one frame without waiting; call :meth:`drain` now and then."""
        self._writer.write(self.conversation.send(message))

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark."""
        await self._writer.drain()

    async def recv(self) -> Reply:
        """Return the next message from the server.

        Raises:
            ConnectionLost: the server closed the connection or broke the protocol.
        """
        conversation = self.conversation
        while True:
            try:
                message = conversation.next_event()
            except ProtocolError as exc:
                raise BadFrame(str(exc)) from None
            if message is not None:
                return message
            if conversation.state is State.CLOSED:
                raise ConnectionLost("the server closed the connection")
            data = await self._reader.read(_READ_SIZE)
            try:
                conversation.receive_data(data)
            except ProtocolError as exc:
                raise BadFrame(str(exc), data[:24]) from None

    async def request(self, message: Request) -> Reply:
        """Send one request and return the next message (for one-at-a-time use)."""
        await self.send(message)
        return await self.recv()

    async def goodbye(self, wait: float = 30.0) -> None:
        """Say ``bye`` and wait for the server to answer it (all earlier replies first)."""
        with contextlib.suppress(ConnectionLost, LocalProtocolError, OSError, TimeoutError):
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
