"""forkwire wire protocol v1: length-prefixed JSON frames, sans-IO.

Nothing here opens a socket or needs an event loop; the server and the clients wrap it
in their own I/O.
"""

from forkwire.protocol.errors import (
    BadJSON,
    BadMessage,
    FrameTooLarge,
    ProtocolError,
    TruncatedFrame,
    UnknownType,
)
from forkwire.protocol.framing import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    FrameDecoder,
    decode_datagram,
    encode_frame,
)
from forkwire.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    Bye,
    Calc,
    CalcError,
    CalcResult,
    Error,
    Hello,
    Message,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Report,
    ReportResult,
    Stats,
    StatsResult,
    Welcome,
    decode_message,
    encode_message,
    pack,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "HEADER_SIZE",
    "PROTOCOL_VERSION",
    "Ack",
    "BadJSON",
    "BadMessage",
    "Bye",
    "Calc",
    "CalcError",
    "CalcResult",
    "Error",
    "FrameDecoder",
    "FrameTooLarge",
    "Hello",
    "Message",
    "ProtocolError",
    "Reading",
    "ReadingMsg",
    "ReadingsMsg",
    "Report",
    "ReportResult",
    "Stats",
    "StatsResult",
    "TruncatedFrame",
    "UnknownType",
    "Welcome",
    "decode_datagram",
    "decode_message",
    "encode_frame",
    "encode_message",
    "pack",
]
