"""Length-prefixed framing: every split of a stream decodes alike; limits apply before the body."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkwire.protocol.errors import FrameTooLarge, ProtocolError, TruncatedFrame
from forkwire.protocol.framing import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    FrameDecoder,
    decode_datagram,
    encode_frame,
)

PAYLOADS = [b"", b"a", b"hello", bytes(range(256)), b"", b"\x00\x00\x00\x05", b"x" * 1000]
STREAM = b"".join(encode_frame(p) for p in PAYLOADS)


def header(length: int) -> bytes:
    return struct.pack("!I", length)


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames


def test_encode_frame_prefixes_big_endian_length() -> None:
    """encode_frame puts a u32 big-endian length before the payload."""
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"x" * 258)[:HEADER_SIZE] == b"\x00\x00\x01\x02"
    assert HEADER_SIZE == 4


def test_stream_fed_whole_decodes_every_payload() -> None:
    """A stream of frames fed in one piece yields every payload in order."""
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == PAYLOADS
    assert decoder.buffered == 0
    decoder.eof()


def test_stream_fed_byte_by_byte_decodes_every_payload() -> None:
    """A stream fed one byte at a time yields the same payloads as fed whole."""
    decoder = FrameDecoder()
    frames = feed_all(decoder, [STREAM[i : i + 1] for i in range(len(STREAM))])
    assert frames == PAYLOADS
    decoder.eof()


def test_stream_split_at_every_offset_decodes_every_payload() -> None:
    """A stream cut in two at any offset yields the same payloads as fed whole."""
    for split in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        assert feed_all(decoder, [STREAM[:split], STREAM[split:]]) == PAYLOADS, split
        decoder.eof()


def test_short_stream_split_at_every_pair_of_offsets_decodes_every_payload() -> None:
    """A stream cut in three at any two offsets yields the same payloads as fed whole."""
    payloads = [b"ab", b"", b"cde", b"f"]
    stream = b"".join(encode_frame(p) for p in payloads)
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            decoder = FrameDecoder()
            chunks = [stream[:i], stream[i:j], stream[j:]]
            assert feed_all(decoder, chunks) == payloads, (i, j)
            decoder.eof()


def test_zero_length_payload_is_a_frame() -> None:
    """An empty payload is a 4-byte frame that decodes to b'' (and several in a row too)."""
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"") * 3) == [b"", b"", b""]
    decoder.eof()


def test_partial_frame_is_buffered_until_complete() -> None:
    """Bytes of an unfinished frame are kept and counted, and nothing is returned early."""
    frame = encode_frame(b"hello")
    decoder = FrameDecoder()
    assert decoder.feed(frame[:6]) == []
    assert decoder.buffered > 0
    assert decoder.feed(frame[6:]) == [b"hello"]
    assert decoder.buffered == 0


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    """A payload of exactly max_frame bytes is within the limit."""
    decoder = FrameDecoder(max_frame=8)
    assert decoder.feed(encode_frame(b"12345678")) == [b"12345678"]


def test_oversized_header_raises_before_any_body_byte() -> None:
    """A header declaring more than max_frame raises as soon as its 4 bytes arrive."""
    decoder = FrameDecoder(max_frame=8)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header(9))
    assert info.value.code == "frame_too_large"


def test_oversized_header_raises_on_its_fourth_byte() -> None:
    """Fed byte by byte, an oversized header passes 3 bytes and raises on the 4th."""
    decoder = FrameDecoder(max_frame=DEFAULT_MAX_FRAME)
    raw = header(DEFAULT_MAX_FRAME + 1)
    for byte in raw[:3]:
        assert decoder.feed(bytes([byte])) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(raw[3:])


def test_oversized_header_after_valid_frames_raises_on_the_next_call() -> None:
    """Valid frames before an oversized header are delivered; the error comes next call."""
    decoder = FrameDecoder(max_frame=8)
    assert decoder.feed(encode_frame(b"ok") + header(2**32 - 1)) == [b"ok"]
    assert isinstance(decoder.error, FrameTooLarge)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"")


def test_payloads_before_an_oversized_header_are_delivered_however_split() -> None:
    """Frames completed before an oversized header are delivered whatever the split."""
    stream = encode_frame(b"a") + encode_frame(b"b") + header(100)
    outcomes = []
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        decoder = FrameDecoder(max_frame=8)
        delivered: list[bytes] = []
        raised = False
        for chunk in chunks:
            try:
                delivered += decoder.feed(chunk)
            except FrameTooLarge:
                raised = True
                break
        if not raised:
            # A decoder may hand back the good frames first and report the error next call.
            with pytest.raises(FrameTooLarge):
                decoder.feed(b"")
        outcomes.append(delivered)
    assert outcomes == [[b"a", b"b"], [b"a", b"b"]]


def test_decoder_refuses_use_after_an_error() -> None:
    """After a protocol error the stream position is lost, so any further feed is refused."""
    decoder = FrameDecoder(max_frame=8)
    with pytest.raises(FrameTooLarge):
        decoder.feed(header(9))
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ok"))
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"")
    with pytest.raises(FrameTooLarge):
        decoder.eof()


@pytest.mark.parametrize("cut", [1, 3, HEADER_SIZE, HEADER_SIZE + 2])
def test_eof_inside_a_frame_raises_truncated(cut: int) -> None:
    """eof() inside a header or a body raises TruncatedFrame."""
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"x") + encode_frame(b"abc")[:cut]) == [b"x"]
    with pytest.raises(TruncatedFrame) as info:
        decoder.eof()
    assert info.value.code == "truncated_frame"


def test_eof_at_a_frame_boundary_is_clean() -> None:
    """eof() right after a complete frame, or before any byte, does not raise."""
    FrameDecoder().eof()
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"abc"))
    decoder.eof()


@pytest.mark.parametrize("max_frame", [0, -1, 2**32])
def test_decoder_rejects_an_impossible_max_frame(max_frame: int) -> None:
    """max_frame must be a positive size a u32 header can express."""
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame=max_frame)


def test_decode_datagram_of_exact_length() -> None:
    """A datagram whose header equals its size minus 4 yields its payload."""
    assert decode_datagram(encode_frame(b"hello")) == b"hello"
    assert decode_datagram(encode_frame(b"")) == b""


@pytest.mark.parametrize(
    "datagram",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x00\x00", id="short-header"),
        pytest.param(header(5) + b"abcd", id="short-body"),
        pytest.param(header(5) + b"abcdef", id="long-body"),
        pytest.param(encode_frame(b"a") + encode_frame(b"b"), id="two-frames"),
    ],
)
def test_decode_datagram_of_wrong_length_is_truncated(datagram: bytes) -> None:
    """A datagram shorter or longer than its header says, or without one, is TruncatedFrame."""
    with pytest.raises(TruncatedFrame):
        decode_datagram(datagram)


def test_decode_datagram_oversized_is_too_large() -> None:
    """A datagram header declaring more than max_frame is FrameTooLarge, whatever follows."""
    with pytest.raises(FrameTooLarge):
        decode_datagram(encode_frame(b"123456789"), max_frame=8)
    with pytest.raises(FrameTooLarge):
        decode_datagram(header(2**32 - 1))
    assert decode_datagram(encode_frame(b"12345678"), max_frame=8) == b"12345678"


@settings(max_examples=200)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=10),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_any_payloads_split_anywhere_decode_back(payloads: list[bytes], cuts: list[int]) -> None:
    """Any payloads, concatenated as frames and cut anywhere, decode back to themselves."""
    stream = b"".join(encode_frame(p) for p in payloads)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    decoder = FrameDecoder()
    assert feed_all(decoder, chunks) == payloads
    decoder.eof()


@settings(max_examples=300)
@given(
    chunks=st.lists(st.binary(max_size=64), max_size=6),
    max_frame=st.integers(min_value=1, max_value=64),
)
def test_random_bytes_decode_or_raise_protocol_error(chunks: list[bytes], max_frame: int) -> None:
    """Random bytes either decode into bounded payloads or raise a ProtocolError, nothing else."""
    decoder = FrameDecoder(max_frame=max_frame)
    try:
        for frame in feed_all(decoder, chunks):
            assert len(frame) <= max_frame
        decoder.eof()
    except ProtocolError:
        pass


@settings(max_examples=200)
@given(datagram=st.binary(max_size=80), max_frame=st.integers(min_value=1, max_value=64))
def test_random_datagrams_decode_or_raise_protocol_error(datagram: bytes, max_frame: int) -> None:
    """Random datagrams either yield exactly their body or raise a ProtocolError, nothing else."""
    try:
        payload = decode_datagram(datagram, max_frame=max_frame)
    except ProtocolError:
        return
    assert payload == datagram[HEADER_SIZE:]
    assert len(payload) <= max_frame
