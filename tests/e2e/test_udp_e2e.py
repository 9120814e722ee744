"""The UDP endpoint of a real server subprocess: bad datagrams are dropped and counted."""

from __future__ import annotations

import asyncio
import socket
import struct

from forkwire.client.local import LocalServer
from forkwire.protocol import (
    Calc,
    CalcResult,
    Error,
    Hello,
    Stats,
    StatsResult,
    Welcome,
    decode_datagram,
    decode_reply,
    encode_frame,
    pack,
)


def exchange(port: int, datagrams: list[bytes], replies: int) -> list[object]:
    """Send datagrams from one socket and collect ``replies`` answers (3 s each at most)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3.0)
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
        return [decode_reply(decode_datagram(sock.recvfrom(65_535)[0])) for _ in range(replies)]


async def test_garbage_truncated_oversized_then_valid_calc(server: LocalServer) -> None:
    """Garbage, truncated and oversized datagrams are dropped and counted, never answered;
    a valid calc after them is answered correctly, and stats count each kind."""
    bad = [
        b"",
        b"\x00",
        b"garbage that is not a frame",
        struct.pack("!I", 100) + b'{"type": "stats"}',  # header says more than it carries
        struct.pack("!I", 2) + b"{}{}",  # header says less
        struct.pack("!I", 50 * 1024 * 1024) + b"x" * 1000,  # over max_frame
    ]
    good = [pack(Calc(id=41, ops=["2 * (3 + 4)", "1 / 8", "1 / 0"])), pack(Stats())]

    replies = await asyncio.to_thread(exchange, server.port, bad + good, 2)

    # Stats is answered at once, the job when its child is done: match them by type.
    (result,) = [reply for reply in replies if isinstance(reply, CalcResult)]
    (stats,) = [reply for reply in replies if isinstance(reply, StatsResult)]
    assert result.id == 41
    assert result.results == [14, 0.125, None]
    assert [(e.index, e.code) for e in result.errors] == [(2, "division_by_zero")]
    assert stats.counters["udp_datagrams_malformed"] == len(bad)
    assert stats.counters["udp_datagrams_received"] == len(bad) + 2


async def test_invalid_message_gets_one_error_datagram(server: LocalServer) -> None:
    """A well-framed datagram whose JSON is wrong gets exactly one error back; hello works."""
    datagrams = [encode_frame(b'{"type": "calc", "id": 5, "ops": "1+1"}'), pack(Hello())]

    replies = await asyncio.to_thread(exchange, server.port, datagrams, 2)

    error, welcome = replies
    assert isinstance(error, Error)
    assert error.code == "bad_message"
    assert error.ref == 5
    assert isinstance(welcome, Welcome)
