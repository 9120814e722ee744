"""The client's one TCP shell: a thin loop around ``ClientConnection``, opened with ``hello``.

Every client (calc, sensors, replay, profiles, report, demo) builds on this; none of them
touches a socket or the frame codec directly, and the rules of the conversation are the
protocol's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from pathlib import Path
from types import TracebackType
from typing import Final

from forkwire.client.errors import AccessDenied, ConnectError, ConnectionLost
from forkwire.protocol import (
    Bye,
    ClientConnection,
    Error,
    ErrorCode,
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


#: The first bytes of a TLS alert record (content type 21, version 3.x): what a TLS server
#: answers to a client that speaks in the clear.
_TLS_ALERT: Final = b"\x15\x03"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a client shows a server that wants it: the token, and whether to speak TLS.

    Args:
        token: sent in ``hello`` (TCP) and sealing each datagram (UDP); None: none.
        tls: speak TLS on TCP, checking the server's certificate and host name.
        cafile: PEM CA certificates to check it with; None: the system's store.
    """

    token: str | None = None
    tls: bool = False
    cafile: Path | None = None

    def __repr__(self) -> str:
        shown = "***" if self.token else None
        return f"Credentials(token={shown}, tls={self.tls}, cafile={self.cafile})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (TLS 1.2+), or None without ``tls``.

        Raises:
            ConnectError: the CA file cannot be read.
        """
        if not self.tls and self.cafile is None:
            return None
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ValueError) as exc:
            raise ConnectError(f"cannot use the CA file {self.cafile}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


#: No token, no TLS.
PLAIN: Final = Credentials()


class BadFrame(ConnectionLost):
    """The server sent bytes that are not a forkwire frame."""

    def __init__(self, problem: str, sent: bytes = b"") -> None:
        super().__init__(f"bad frame from the server: {problem}")
        self.sent = sent
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
        credentials: Credentials = PLAIN,
    ) -> Connection:
        """Connect (over TLS if the credentials say so) and exchange ``hello``/``welcome``.

        Raises:
            ConnectError: unreachable, refused, timed out, not a forkwire server, TLS on
                one side only, or the token refused.
        """
        address = f"{host}:{port}"
        context = credentials.ssl_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), timeout=connect_timeout
            )
        except ssl.SSLCertVerificationError as exc:
            raise AccessDenied(
                f"{address}'s TLS certificate was refused: {exc.verify_message} "
                "(give its CA with --cafile)"
            ) from None
        except ssl.SSLError as exc:
            raise AccessDenied(
                f"{address} does not speak TLS ({exc.reason or exc}): drop --tls, or check the port"
            ) from None
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
            raise ConnectError(f"cannot connect to {address}: {reason}") from None
        connection = cls(reader, writer, address)
        try:
            await connection.send(Hello(client=client, token=credentials.token))
            reply = await asyncio.wait_for(connection.recv(), timeout=hello_timeout)
        except TimeoutError:
            await connection.close()
            raise ConnectError(
                f"{address} is not a forkwire server: no answer to hello within {hello_timeout:g} s"
            ) from None
        except BadFrame as exc:
            await connection.close()
            if exc.sent.startswith(_TLS_ALERT) and context is None:
                raise AccessDenied(f"{address}: the server speaks TLS: use --tls") from None
            raise ConnectError(f"{address} is not a forkwire server: {exc.detail}") from None
        except (ConnectionLost, OSError) as exc:
            await connection.close()
            # A TLS server aborts a handshake it cannot read without a word (asyncio's sends
            # no alert): ask it for one to say so, rather than "closed the connection".
            if context is None and await _speaks_tls(host, port, hello_timeout):
                raise AccessDenied(f"{address}: the server speaks TLS: use --tls") from None
            raise ConnectError(f"{address} did not answer hello: {exc}") from None
        if isinstance(reply, Error) and reply.code == ErrorCode.UNAUTHORIZED:
            await connection.close()
            if credentials.token is None:
                raise AccessDenied(
                    f"{address} requires a token: give it with --token or FORKWIRE_TOKEN"
                )
            raise AccessDenied(f"{address} refused the token: it is not the server's")
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


async def _speaks_tls(host: str, port: int, wait: float) -> bool:
    """Whether a TLS handshake with ``host:port`` succeeds (its certificate unchecked:
    this only tells what the port speaks, and nothing is sent over it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(wait):
            _, writer = await asyncio.open_connection(host, port, ssl=context)
    except (OSError, TimeoutError):
        return False
    with contextlib.suppress(OSError):
        writer.close()
    return True


def describe_error(error: Error) -> str:
    """One line for a server ``error`` frame."""
    return f"{error.code}: {error.message}"
