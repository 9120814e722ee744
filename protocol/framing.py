"""Length-prefixed framing, sans-IO.

A frame is a ``u32`` big-endian payload length followed by the payload. Over TCP frames
follow one another on the stream; over UDP every datagram is exactly one frame.
"""

from __future__ import annotations

import struct
from typing import Final

from forkwire.protocol.errors import FrameTooLarge, ProtocolError, TruncatedFrame

HEADER: Final = struct.Struct("!I")
HEADER_SIZE: Final = HEADER.size

#: 1 MiB. Like h11's DEFAULT_MAX_INCOMPLETE_EVENT_SIZE this bounds what one peer can make
#: us buffer; a 1,000-expression calc job of the real workload is about 40 KiB, so the
#: default leaves a wide margin while keeping a hostile header from costing memory.
DEFAULT_MAX_FRAME: Final = 1024 * 1024

#: The largest payload the u32 header can describe.
MAX_FRAME_LIMIT: Final = 2**32 - 1


def encode_frame(payload: bytes) -> bytes:
    """Return ``payload`` with its length header.

    Raises:
        ValueError: the payload does not fit a u32 length.
    """
    if len(payload) > MAX_FRAME_LIMIT:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a u32 length")
    return HEADER.pack(len(payload)) + payload


def decode_datagram(datagram: bytes, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the payload of a datagram that holds exactly one frame.

    Raises:
        TruncatedFrame: the datagram is shorter or longer than its header says.
        FrameTooLarge: the header declares more than ``max_frame`` bytes.
    """
    if len(datagram) < HEADER_SIZE:
        raise TruncatedFrame(f"datagram of {len(datagram)} bytes has no frame header")
    (length,) = HEADER.unpack_from(datagram)
    if length > max_frame:
        raise FrameTooLarge(f"frame of {length} bytes exceeds max_frame {max_frame}")
    if length != len(datagram) - HEADER_SIZE:
        raise TruncatedFrame(
            f"header declares {length} bytes but the datagram carries {len(datagram) - HEADER_SIZE}"
        )
    return datagram[HEADER_SIZE:]


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    Feed it whatever the transport delivered, in pieces of any size; it returns the
    payloads completed so far. The declared length is checked against ``max_frame`` as
    soon as the header is complete, before any of the body is buffered. After an error the
    decoder stays broken: the stream position is lost, so the connection must close.
    """

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 < max_frame <= MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame must be in 1..{MAX_FRAME_LIMIT}, got {max_frame}")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # body length of the frame in progress
        self._error: ProtocolError | None = None
        self._completed = 0

    @property
    def error(self) -> ProtocolError | None:
        """The error that ended the stream, once a bad header was seen."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a payload."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame (a header or some of it) is waiting for the rest."""
        return self._need is not None or bool(self._buffer)

    @property
    def completed(self) -> int:
        """Frames completed so far (the frame in progress, if any, is the next one)."""
        return self._completed

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every payload they complete, in order.

        Raises:
            FrameTooLarge: a header declared more than ``max_frame`` bytes, and no payload
                completed before it in this call (else it is raised by the next call).
        """
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        pos = 0
        end = len(buffer)
        while True:
            need = self._need
            if need is None:
                if end - pos < HEADER_SIZE:
                    break
                (need,) = HEADER.unpack_from(buffer, pos)
                if need > self.max_frame:
                    self._error = FrameTooLarge(
                        f"frame of {need} bytes exceeds max_frame {self.max_frame}"
                    )
                    del buffer[:]
                    if frames:
                        # What came before the bad header is good: hand it over now and
                        # raise on the next call, so the outcome never depends on how the
                        # transport split the stream.
                        return frames
                    raise self._error
                pos += HEADER_SIZE
                self._need = need
            if end - pos < need:
                break
            frames.append(bytes(buffer[pos : pos + need]))
            self._completed += 1
            pos += need
            self._need = None
        if pos:
            del buffer[:pos]
        return frames

    def eof(self) -> None:
        """Declare the end of the stream.

        Raises:
            TruncatedFrame: the stream ended inside a frame.
            FrameTooLarge: a bad header was seen earlier and not yet raised.
        """
        if self._error is not None:
            raise self._error
        if self._buffer or self._need is not None:
            raise TruncatedFrame(
                f"stream ended inside a frame ({len(self._buffer)} bytes buffered)"
            )
