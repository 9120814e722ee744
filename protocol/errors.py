"""Typed errors of the wire protocol.

Like h11's, they come in two kinds. A :class:`ProtocolError` says the *peer* broke the
protocol; it carries a stable ``code`` (:class:`~forkwire.protocol.codes.ErrorCode`) that
a server turns into an ``error`` frame. A :class:`LocalProtocolError` says *this* side
misused the conversation API (sent after ``bye``, answered a request twice): a bug, never
the peer's fault. Nothing matches on message strings.
"""

from __future__ import annotations

from typing import ClassVar

from forkwire.protocol.codes import ErrorCode


class ProtocolError(Exception):
    """The peer sent something this protocol does not accept."""

    code: ClassVar[ErrorCode] = ErrorCode.BAD_MESSAGE

    def __init__(self, message: str, *, ref: int | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The id of the request the bad frame belonged to, when it could be recovered,
        #: so the peer can fail that one request instead of guessing.
        self.ref = ref


class FrameTooLarge(ProtocolError):
    """A frame header declared more bytes than the receiver accepts."""

    code = ErrorCode.FRAME_TOO_LARGE


class TruncatedFrame(ProtocolError):
    """The stream ended, or a datagram was cut, in the middle of a frame."""

    code = ErrorCode.TRUNCATED_FRAME


class BadJSON(ProtocolError):
    """The payload is not one UTF-8 JSON object."""

    code = ErrorCode.BAD_JSON


class UnknownType(ProtocolError):
    """The payload's ``type`` is missing or names no message of this version."""

    code = ErrorCode.UNKNOWN_TYPE


class BadMessage(ProtocolError):
    """The payload is a known message type whose fields fail validation."""

    code = ErrorCode.BAD_MESSAGE


class UnexpectedMessage(ProtocolError):
    """A message of the other direction: a client sent ``ack``, a server sent ``calc``."""

    code = ErrorCode.UNEXPECTED_MESSAGE


class UnsupportedVersion(ProtocolError):
    """``hello`` named a protocol version the server does not speak."""

    code = ErrorCode.UNSUPPORTED_VERSION


class Unauthorized(ProtocolError):
    """The server requires a token, and this conversation has not shown it."""

    code = ErrorCode.UNAUTHORIZED


class LocalProtocolError(RuntimeError):
    """This side used the conversation object wrongly (a bug in the caller)."""
