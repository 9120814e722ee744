"""Typed errors of the wire protocol.

Each error carries a stable ``code``. The I/O shells map the code to an ``error`` frame;
nothing matches on message strings.
"""

from __future__ import annotations

from typing import ClassVar


class ProtocolError(Exception):
    """The peer sent something this protocol does not accept."""

    code: ClassVar[str] = "protocol_error"

    def __init__(self, message: str, *, ref: int | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The id of the request the bad frame belonged to, when it could be recovered,
        #: so the peer can fail that one request instead of guessing.
        self.ref = ref


class FrameTooLarge(ProtocolError):
    """A frame header declared more bytes than the receiver accepts."""

    code = "frame_too_large"


class TruncatedFrame(ProtocolError):
    """The stream ended, or a datagram was cut, in the middle of a frame."""

    code = "truncated_frame"


class BadJSON(ProtocolError):
    """The payload is not one UTF-8 JSON object."""

    code = "bad_json"


class UnknownType(ProtocolError):
    """The payload's ``type`` is missing or names no message of this version."""

    code = "unknown_type"


class BadMessage(ProtocolError):
    """The payload is a known message type whose fields fail validation."""

    code = "bad_message"
