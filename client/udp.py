"""The client's UDP shell: one frame per datagram to one server address.

UDP promises nothing, so this shell promises nothing either: ``send`` hands a datagram to
the kernel, ``recv`` returns the next well-formed reply, and malformed datagrams are
dropped and counted. Retries, acks and loss accounting belong to the callers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from forkwire.client.errors import ConnectError
from forkwire.protocol import ClientDatagrams, Hello, ProtocolError, Reply, Request, Welcome

#: A payload that fits one Ethernet frame with IP and UDP headers, so it is never
#: fragmented: a lost fragment loses the whole datagram.
DEFAULT_DATAGRAM = 1400


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, token: str | None = None) -> None:
        self.rules = ClientDatagrams(token=token)
        self.queue: asyncio.Queue[Reply] = asyncio.Queue()
        self.malformed = 0
        self.errors = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self.queue.put_nowait(self.rules.receive(data))
        except ProtocolError:
            self.malformed += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: nobody listens there (yet). Callers see it as silence.
        self.errors += 1


class UdpConnection:
    """A connected UDP socket speaking frames to one server."""

    def __init__(self, transport: asyncio.DatagramTransport, receiver: _Receiver) -> None:
        self._transport = transport
        self._receiver = receiver
        self.sent = 0

    @classmethod
    async def open(cls, host: str, port: int, *, token: str | None = None) -> UdpConnection:
        """Create the socket (UDP has no handshake: nothing is checked here).

        Args:
            token: seal every datagram with it (a server with a token reads no other).

        Raises:
            ConnectError: the address cannot be used.
        """
        loop = asyncio.get_running_loop()
        try:
            transport, receiver = await loop.create_datagram_endpoint(
                lambda: _Receiver(token), remote_addr=(host, port)
            )
        except OSError as exc:
            raise ConnectError(f"cannot open UDP to {host}:{port}: {exc}") from None
        return cls(transport, receiver)

    @property
    def sealed(self) -> bool:
        """Whether each datagram is sealed with a token (which makes it larger)."""
        return self._receiver.rules.token is not None

    @property
    def malformed(self) -> int:
        """Datagrams received that were not one valid frame."""
        return self._receiver.malformed

    def send(self, message: Request) -> None:
        """Send one datagram; it may be lost."""
        self._transport.sendto(self._receiver.rules.send(message))
        self.sent += 1

    async def recv(self) -> Reply:
        """The next reply, in arrival order."""
        return await self._receiver.queue.get()

    async def hello(self, wait: float = 2.0, tries: int = 3) -> Welcome:
        """Ask for the server's welcome, trying a few times since a datagram may be lost.

        Raises:
            ConnectError: no welcome after ``tries`` attempts.
        """
        for _ in range(tries):
            self.send(Hello(client="forkwire-udp"))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while True:
                        reply = await self.recv()
                        if isinstance(reply, Welcome):
                            return reply
        hint = (
            " (a server with a token drops datagrams without valid proof of it unanswered: "
            "check --token, and that both clocks are within 30 s)"
            if self.sealed
            else " (a server with a token answers nothing without it: --token)"
        )
        raise ConnectError(f"no answer to hello over UDP after {tries} tries{hint}")

    def close(self) -> None:
        """Close the socket."""
        self._transport.close()


class UdpLink:
    """A :class:`UdpConnection` in the shape of a TCP :class:`Connection`, for the fleet.

    ``send`` never waits (the kernel takes the datagram or drops it), ``goodbye`` has no
    conversation to end, and a welcome is asked for first so that a server that is not
    there shows up as a connect failure, like TCP's refused connection.
    """

    def __init__(self, udp: UdpConnection, welcome: Welcome) -> None:
        self.udp = udp
        self.welcome = welcome

    @classmethod
    async def open(cls, host: str, port: int, *, token: str | None = None) -> UdpLink:
        """Open the socket and wait for the server's welcome.

        Raises:
            ConnectError: no welcome came back.
        """
        udp = await UdpConnection.open(host, port, token=token)
        try:
            welcome = await udp.hello(wait=1.0, tries=2)
        except ConnectError:
            udp.close()
            raise
        return cls(udp, welcome)

    async def send(self, message: Request) -> None:
        """Send one datagram."""
        self.udp.send(message)

    async def recv(self) -> Reply:
        """The next reply."""
        return await self.udp.recv()

    async def goodbye(self, wait: float = 0.0) -> None:
        """Nothing to end over UDP."""

    async def close(self) -> None:
        """Close the socket."""
        self.udp.close()
