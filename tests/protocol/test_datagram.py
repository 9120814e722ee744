"""The UDP rules: one frame per datagram, no session, replies that fit a datagram."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkwire.protocol import (
    MAX_DATAGRAM,
    Answered,
    Bye,
    CalcResult,
    ClientDatagrams,
    DatagramRequest,
    Dropped,
    Error,
    ErrorCode,
    Hello,
    ProtocolError,
    Rejected,
    ServerDatagrams,
    Stats,
    StatsResult,
    Welcome,
    encode_frame,
    pack,
)

WELCOME = Welcome(server="forkwire/test", max_frame=4096)
RULES = ServerDatagrams(WELCOME, max_frame=4096)


def test_a_request_is_for_the_application() -> None:
    """A valid request gets no reply from the rules: the application answers it."""
    event, reply = RULES.receive(pack(Stats()))
    assert event == DatagramRequest(Stats())
    assert reply is None


@pytest.mark.parametrize(("message", "answer"), [(Hello(), WELCOME), (Bye(), Bye())])
def test_hello_and_bye_are_answered_by_the_rules(message: object, answer: object) -> None:
    """With no session, hello gets the welcome and bye gets bye, every time."""
    event, reply = RULES.receive(pack(message))  # type: ignore[arg-type]
    assert isinstance(event, Answered)
    assert reply is not None
    assert ClientDatagrams().receive(reply) == answer


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x00\x00", pack(Stats())[:-1], pack(Stats()) + b"x", (10**6).to_bytes(4, "big")],
)
def test_a_datagram_that_is_not_one_frame_is_dropped_unanswered(datagram: bytes) -> None:
    """Short, long, or oversized: nothing in it is trusted, nothing is sent back."""
    event, reply = RULES.receive(datagram)
    assert isinstance(event, Dropped)
    assert reply is None


def test_a_bad_payload_in_a_good_frame_is_answered_with_an_error() -> None:
    """A well-framed datagram that is no valid request gets one error datagram."""
    event, reply = RULES.receive(encode_frame(b'{"type": "calc", "id": 3, "ops": "x"}'))
    assert isinstance(event, Rejected)
    assert reply is not None
    error = ClientDatagrams().receive(reply)
    assert isinstance(error, Error)
    assert (error.code, error.ref) == (ErrorCode.BAD_MESSAGE, 3)


def test_another_version_is_refused() -> None:
    """hello for version 9 is answered unsupported_version."""
    event, reply = RULES.receive(pack(Hello(version=9)))
    assert isinstance(event, Rejected)
    assert reply is not None
    assert ClientDatagrams().receive(reply).code == ErrorCode.UNSUPPORTED_VERSION  # type: ignore[union-attr]


def test_a_reply_too_large_for_a_datagram_becomes_an_error() -> None:
    """A reply over the datagram limit is replaced by reply_too_large naming the request."""
    big = CalcResult(id=5, results=list(range(20_000)))
    datagram = RULES.reply(big, ref=5)
    assert len(datagram) <= MAX_DATAGRAM
    error = ClientDatagrams().receive(datagram)
    assert isinstance(error, Error)
    assert (error.code, error.ref) == (ErrorCode.REPLY_TOO_LARGE, 5)
    small = StatsResult(counters={"a": 1})
    assert ClientDatagrams().receive(RULES.reply(small)) == small


def test_the_client_refuses_what_is_not_a_reply() -> None:
    """A request arriving at a client, or a cut datagram, raises a ProtocolError."""
    client = ClientDatagrams()
    with pytest.raises(ProtocolError):
        client.receive(pack(Stats()))
    with pytest.raises(ProtocolError):
        client.receive(pack(WELCOME)[:-1])


@given(st.binary(max_size=64))
def test_random_datagrams_never_raise(datagram: bytes) -> None:
    """Whatever arrives, the rules answer with an event, never an exception."""
    event, reply = RULES.receive(datagram)
    assert isinstance(event, DatagramRequest | Answered | Rejected | Dropped)
    if isinstance(event, Dropped):
        assert reply is None
