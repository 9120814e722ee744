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

With a token, every datagram must be a :class:`~forkwire.protocol.messages.Sealed`
envelope that proves it (:mod:`forkwire.protocol.auth`): one that does not, ``hello`` and
``bye`` included, is dropped unanswered (:class:`Unauthenticated`), since an answer, even
an error, would let a forged source address aim the server at a third party. Without a
token, a sealed datagram is opened unchecked, as a ``hello`` token is ignored over TCP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError

from forkwire.protocol.auth import Opener, TokenCheck, Unsealed, seal
from forkwire.protocol.codes import ErrorCode
from forkwire.protocol.connection import Rejected, negotiate
from forkwire.protocol.errors import BadMessage, ProtocolError, UnknownType, UnsupportedVersion
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
    decode_sealed,
    encode_message,
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
class Unauthenticated:
    """The server has a token and the datagram did not prove it: nothing is answered.

    ``reason``: ``not_sealed``, ``bad_mac``, ``outside_window`` or ``replayed``.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Answered:
    """A ``hello`` or ``bye``, answered by the rules (welcome, bye)."""

    message: Hello | Bye


@dataclass(frozen=True, slots=True)
class DatagramRequest:
    """A request the application answers with :meth:`ServerDatagrams.reply`."""

    message: Request


DatagramEvent = DatagramRequest | Answered | Rejected | Dropped | Unauthenticated


class ServerDatagrams:
    """What the server's UDP endpoint does with each datagram.

    Args:
        welcome: the answer to every ``hello``.
        max_frame: the largest frame accepted.
        max_reply: the largest reply datagram sent to a smaller request (a reply may be as
            large as its request, up to ``MAX_DATAGRAM``); 0: none larger than its request.
        token: the token each datagram must prove; None: none required.
        clock: UNIX time now, for the replay window.
    """

    def __init__(
        self,
        welcome: Welcome,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_reply: int = MAX_DATAGRAM,
        token: TokenCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.welcome = welcome
        self.max_frame = max_frame
        self.max_reply = max_reply
        self.clock = clock
        self._opener = Opener(token) if token is not None else None

    def receive(self, datagram: bytes) -> tuple[DatagramEvent, bytes | None]:
        """What one datagram means, and the reply the rules give it: None for a dropped
        datagram, for a :class:`DatagramRequest`, which the application answers, and for
        an answer that no datagram within the bound can carry."""
        size = len(datagram)
        try:
            payload = decode_datagram(datagram, max_frame=self.max_frame)
        except ProtocolError as exc:
            return Dropped(exc), None
        if self._opener is not None:
            try:
                payload = self._opener.open(payload, self.clock())
            except Unsealed as refused:
                return Unauthenticated(refused.reason), None
        try:
            message = decode_request(payload)
        except UnknownType as exc:
            opened = _open_unchecked(payload) if self._opener is None else None
            if opened is None:
                return Rejected(exc), self._error(exc, size)
            try:
                message = decode_request(opened)
            except ProtocolError as inner:
                return Rejected(inner), self._error(inner, size)
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


def _open_unchecked(payload: bytes) -> bytes | None:
    try:
        return decode_sealed(payload).body.encode()
    except (ValidationError, ValueError):
        return None


class ClientDatagrams:
    """The client's side: requests to datagrams, datagrams to replies.

    Args:
        token: seal every request with it (a server with a token reads nothing else).
        clock: UNIX time now, for the seal's ``ts``.
    """

    def __init__(
        self,
        *,
        max_frame: int = MAX_DATAGRAM,
        token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_frame = max_frame
        self.token = token or None
        self.clock = clock

    def send(self, message: Request) -> bytes:
        """The datagram of one request, sealed when there is a token."""
        if self.token is None:
            return pack(message)
        return seal(encode_message(message), self.token, self.clock())

    def receive(self, datagram: bytes) -> Reply:
        """The reply one datagram holds.

        Raises:
            ProtocolError: not one frame, or not a reply (drop it and count it).
        """
        return decode_reply(decode_datagram(datagram, max_frame=self.max_frame))
