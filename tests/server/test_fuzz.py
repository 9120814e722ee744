"""Hostile bytes at a real server: whatever arrives gets an answer or a close, the server
stays up, and a fresh well-formed client is served right after.

The server runs as a child process (as a user runs it), fed over real sockets on
127.0.0.1: random bytes, valid frames of every request mutated (bytes flipped, inserted,
cut, the length header changed), and well-framed JSON of every request type with fields of
the wrong shape. Each input goes on its own connection, followed by a half-close; the test
then reads until the server closes, which must happen (a hang fails the test).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fwtest import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forkwire.protocol import (
    Bye,
    Calc,
    CalcResult,
    ClientConnection,
    Hello,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Report,
    Series,
    Stats,
    Welcome,
    encode_frame,
    pack,
)

#: Every wait here is bounded by this; only a hang comes near it.
WAIT = 10.0
EXAMPLES = 120

VALID_FRAMES = [
    pack(message)
    for message in (
        Hello(version=3, client="fuzz"),
        Calc(id=1, ops=["1 + 2", "(3 * 4", "7 / 0"]),
        ReadingMsg(sensor="s", seq=0, ts=1.0, value=1),
        ReadingsMsg(producer="ab" * 16, items=[Reading(sensor="s", seq=1, ts=2.0, value=2.5)]),
        Stats(),
        Report(),
        Series(sensor="s"),
        Bye(),
    )
]
TYPES = ["hello", "calc", "reading", "readings", "stats", "report", "series", "bye", "ack"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_frame(draw: st.DrawFn) -> bytes:
    """A valid frame with a few bytes flipped, inserted or cut, or its header changed."""
    frame = bytearray(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "cut", "header"]))
        at = draw(st.integers(0, len(frame) - 1)) if frame else 0
        if kind == "flip" and frame:
            frame[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "cut" and frame:
            del frame[at : at + draw(st.integers(1, 8))]
        elif kind == "header":
            frame[:4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return bytes(frame)


@st.composite
def wrong_fields(draw: st.DrawFn) -> bytes:
    """Well-framed JSON naming a request type, with fields of any shape."""
    body = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    body["type"] = draw(st.sampled_from(TYPES))
    for name in ("id", "ops", "sensor", "seq", "ts", "value", "items", "version", "producer"):
        if draw(st.booleans()):
            body[name] = draw(json_values)
    return encode_frame(json.dumps(body).encode())


hostile = st.lists(
    st.binary(max_size=512) | mutated_frame() | wrong_fields() | st.sampled_from(VALID_FRAMES),
    min_size=1,
    max_size=4,
).map(b"".join)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server child on a SQLite store; it must still exit cleanly on SIGTERM at the end."""
    chosen = free_port()
    store = tmp_path_factory.mktemp("fuzz") / "readings.sqlite"
    log = (store.parent / "server.log").open("w")
    command = [sys.executable, "-m", "forkwire.server", "--port", str(chosen)]
    command += ["--db", f"sqlite:///{store}", "--log-format", "json", "--workers", "2"]
    proc = subprocess.Popen(command, stderr=log)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", chosen), 0.5).close()
                break
            except OSError:
                assert proc.poll() is None, _tail(store.parent / "server.log")
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        yield chosen
        assert proc.poll() is None, "the server died: " + _tail(store.parent / "server.log")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()
    assert code == 0, _tail(store.parent / "server.log")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=hostile)
def test_any_bytes_get_an_answer_or_a_close(port: int, data: bytes) -> None:
    """The server ends every such conversation itself (answering what it read), its
    replies are well-formed frames, and a fresh client is served right after."""
    received = _converse(port, data)
    client = ClientConnection()
    client.receive_data(received)
    while client.next_event() is not None:
        pass  # each reply decodes (a malformed one would raise here)
    assert _served(port)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(st.binary(max_size=1400) | mutated_frame() | wrong_fields(), max_size=8))
def test_any_datagrams_leave_the_server_serving(port: int, datagrams: list[bytes]) -> None:
    """Over UDP nothing is owed to garbage; what matters is that the server stays up and
    still answers a well-formed datagram and a TCP client."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
    assert _served_over_udp(port)
    assert _served(port)


def test_a_server_under_fuzz_still_serves_well_formed_clients(port: int) -> None:
    """A last check after the examples: a whole conversation, hello to bye."""
    assert _served(port)


def _converse(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the server closes (within WAIT)."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), WAIT) as sock:
        sock.settimeout(WAIT)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return bytes(received)  # it closed on us already: a close is an answer
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


def _served(port: int) -> bool:
    """A well-formed client says hello, gets a calc answered, says bye."""
    client = ClientConnection()
    with socket.create_connection(("127.0.0.1", port), WAIT) as sock:
        sock.settimeout(WAIT)
        sock.sendall(client.send(Hello(version=2, client="check")))
        sock.sendall(client.send(Calc(id=7, ops=["6 * 7"])))
        sock.sendall(client.send(Bye()))
        replies = []
        while len(replies) < 3:
            event = client.next_event()
            if event is not None:
                replies.append(event)
                continue
            chunk = sock.recv(65536)
            assert chunk, f"closed early after {replies}"
            client.receive_data(chunk)
    welcome, result, _ = replies
    return (
        isinstance(welcome, Welcome) and isinstance(result, CalcResult) and result.results == [42]
    )


def _served_over_udp(port: int) -> bool:
    """A small ``calc`` datagram gets its answer (asked again if a datagram is lost).

    Not ``stats``: its answer grows with every counter the fuzzing creates, past the
    size a UDP reply may have (``udp_max_reply``), and is then refused as too large."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        for _ in range(int(WAIT)):
            sock.sendto(pack(Calc(id=7, ops=["1 + 1"])), ("127.0.0.1", port))
            try:
                reply = json.loads(sock.recv(65536)[4:])
            except TimeoutError:
                continue
            return reply.get("type") == "calc_result" and reply.get("results") == [2]
    return False


def _tail(path: Path) -> str:
    return (
        "".join(path.read_text(errors="replace").splitlines(keepends=True)[-20:])
        if path.exists()
        else ""
    )


if os.name != "posix":  # pragma: no cover
    pytest.skip("SIGTERM and half-close semantics are POSIX", allow_module_level=True)
