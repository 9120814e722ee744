"""The rules of UDP, sans-IO: every datagram is exactly one frame, and there is no session.

Over UDP nothing ties one datagram to the next, so there is no conversation to keep:
``hello`` is answered with the welcome each time, ``bye`` with ``bye``, and each request
stands alone. A datagram that is not exactly one frame (its header must declare the
datagram's size minus four) cannot be trusted even as a request to answer: it is dropped.
A frame whose payload is not a valid request is answered with an ``error``. ``report``
and ``series`` are TCP-only: each is a full read of the store for a datagram of a few bytes
(a CPU amplifier), so it is answered ``bad_message``. A reply larger than the request or
``max_reply``, whichever is larger, is replaced by a short ``reply_too_large``: a forged
source address gets back no more than a bounded reflection. With ``max_reply`` 0 no reply
is ever larger than its request: one that would be, even as that error, is not sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from forkwire.protocol.codes import ErrorCode
from forkwire.protocol.connection import Rejected, negotiate
from forkwire.protocol.errors import BadMessage, ProtocolError, UnsupportedVersion
from forkwire.protocol.framing import DEFAULT_MAX_FRAME, decode_datagram
from forkwire.protocol.messages import (
    Bye,
    Error,
    Hello,
    Reply,
    Report,
    Request,
    Series,
    Welcome,
    decode_reply,
    decode_request,
    pack,
)

#: The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
MAX_DATAGRAM: Final = 65_507
#: Requests only served over TCP: each reads the whole store for a few bytes of request.
TCP_ONLY: Final = (Report, Series)


@dataclass(frozen=True, slots=True)
class Dropped:
    """The datagram was not one frame: nothing is answered."""

    error: ProtocolError


@dataclass(frozen=True, slots=True)
class Answered:
    """A ``hello`` or ``bye``, answered by the rules (welcome, bye)."""

    message: Hello | Bye


@dataclass(frozen=True, slots=True)
class DatagramRequest:
    """A request the application answers with :meth:`ServerDatagrams.reply`."""

    message: Request


DatagramEvent = DatagramRequest | Answered | Rejected | Dropped


class ServerDatagrams:
    """What the server's UDP endpoint does with each datagram.

    Args:
        welcome: the answer to every ``hello``.
        max_frame: the largest frame accepted.
        max_reply: the largest reply datagram sent to a smaller request (a reply may be as
            large as its request, up to ``MAX_DATAGRAM``); 0: none larger than its request.
    """

    def __init__(
        self,
        welcome: Welcome,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_reply: int = MAX_DATAGRAM,
    ) -> None:
        self.welcome = welcome
        self.max_frame = max_frame
        self.max_reply = max_reply

    def receive(self, datagram: bytes) -> tuple[DatagramEvent, bytes | None]:
        """What one datagram means, and the reply the rules give it: None for a dropped
        datagram, for a :class:`DatagramRequest`, which the application answers, and for
        an answer that no datagram within the bound can carry."""
        size = len(datagram)
        try:
            payload = decode_datagram(datagram, max_frame=self.max_frame)
        except ProtocolError as exc:
            return Dropped(exc), None
        try:
            message = decode_request(payload)
        except ProtocolError as exc:
            return Rejected(exc), self._error(exc, size)
        if isinstance(message, Hello):
            try:
                welcome = negotiate(message, self.welcome)
            except UnsupportedVersion as refused:
                return Rejected(refused), self._error(refused, size)
            return Answered(message), self.reply(welcome, request_size=size)
        if isinstance(message, Bye):
            return Answered(message), self.reply(Bye(), request_size=size)
        if isinstance(message, TCP_ONLY):
            tcp_only = BadMessage(
                f"{message.type} is served over TCP only", ref=getattr(message, "id", None)
            )
            return Rejected(tcp_only), self._error(tcp_only, size)
        return DatagramRequest(message), None

    def reply(
        self, message: Reply, *, ref: int | str | None = None, request_size: int = 0
    ) -> bytes | None:
        """The datagram of a reply, or of ``reply_too_large`` if it is larger than both
        ``max_reply`` and the request (``request_size`` bytes), or than a datagram; None
        if even that error is larger."""
        frame = pack(message)
        limit = min(MAX_DATAGRAM, max(self.max_reply, request_size))
        if len(frame) <= limit:
            return frame
        refusal = pack(
            Error(
                code=ErrorCode.REPLY_TOO_LARGE,
                message=f"reply of {len(frame)} bytes over the {limit} allowed; send less",
                ref=ref,
            )
        )
        return refusal if len(refusal) <= limit else None

    def _error(self, exc: ProtocolError, request_size: int) -> bytes | None:
        error = Error(code=exc.code, message=exc.message, ref=exc.ref)
        return self.reply(error, request_size=request_size)


class ClientDatagrams:
    """The client's side: requests to datagrams, datagrams to replies."""

    def __init__(self, *, max_frame: int = MAX_DATAGRAM) -> None:
        self.max_frame = max_frame

    def send(self, message: Request) -> bytes:
        """The datagram of one request."""
        return pack(message)

    def receive(self, datagram: bytes) -> Reply:
        """The reply one datagram holds.

        Raises:
            ProtocolError: not one frame, or not a reply (drop it and count it).
        """
        return decode_reply(decode_datagram(datagram, max_frame=self.max_frame))
