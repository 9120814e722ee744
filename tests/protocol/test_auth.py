"""The token rules, sans-IO: a TCP conversation serves nothing before a hello with the
token, and a UDP datagram is read only with a valid seal (MAC, window, nonce once)."""

from __future__ import annotations

import json

import pytest

from forkwire.protocol import (
    Answered,
    Bye,
    Calc,
    ClientDatagrams,
    DatagramRequest,
    Error,
    ErrorCode,
    Greeted,
    Hello,
    Ping,
    ReadingMsg,
    ReadingsMsg,
    Rejected,
    Report,
    Request,
    RequestReceived,
    Series,
    ServerConnection,
    ServerDatagrams,
    State,
    Stats,
    TokenCheck,
    Unauthenticated,
    Welcome,
    decode_reply,
    pack,
)
from forkwire.protocol import auth as auth_module
from forkwire.protocol.auth import Opener, Unsealed, seal
from forkwire.protocol.framing import decode_datagram
from forkwire.protocol.messages import decode_sealed

TOKEN = "s3cret-token"
WELCOME = Welcome(server="test", max_frame=1 << 20)

EVERY_REQUEST: list[Request] = [
    Calc(id=1, ops=["1 + 1"]),
    ReadingMsg(sensor="t", seq=0, ts=1.0, value=1),
    ReadingsMsg(items=[ReadingMsg(sensor="t", seq=0, ts=1.0, value=1)]),
    Stats(),
    Report(),
    Series(sensor="t"),
    Ping(id=1),
    Bye(),
]


def _replies(conversation: ServerConnection) -> list[Error | Welcome]:
    data = conversation.data_to_send()
    out = []
    while data:
        size = int.from_bytes(data[:4], "big")
        reply = decode_reply(data[4 : 4 + size])
        assert isinstance(reply, Error | Welcome)
        out.append(reply)
        data = data[4 + size :]
    return out


def _unauthorized(conversation: ServerConnection) -> None:
    (reply,) = _replies(conversation)
    assert isinstance(reply, Error)
    assert reply.code == ErrorCode.UNAUTHORIZED
    assert conversation.state is State.CLOSED
    assert TOKEN not in reply.message


@pytest.mark.parametrize("request_", EVERY_REQUEST, ids=lambda m: m.type)
def test_with_a_token_no_request_before_hello_is_served(request_: Request) -> None:
    conversation = ServerConnection(WELCOME, token=TokenCheck(TOKEN))
    conversation.receive_data(pack(request_) + pack(Hello(token=TOKEN)))
    event = conversation.next_event()
    assert isinstance(event, Rejected)
    assert conversation.next_event() is None  # the hello after it is never read
    _unauthorized(conversation)


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", "x" * 10_000, TOKEN[:-1]])
def test_a_hello_with_a_wrong_or_no_token_is_refused_and_closed(token: str | None) -> None:
    conversation = ServerConnection(WELCOME, token=TokenCheck(TOKEN))
    conversation.receive_data(pack(Hello(token=token)) + pack(Stats()))
    assert isinstance(conversation.next_event(), Rejected)
    assert conversation.next_event() is None
    _unauthorized(conversation)


def test_a_bad_frame_before_the_hello_is_refused_without_saying_what_is_wrong() -> None:
    conversation = ServerConnection(WELCOME, token=TokenCheck(TOKEN))
    conversation.receive_data(b"\x00\x00\x00\x02{]")
    assert isinstance(conversation.next_event(), Rejected)
    _unauthorized(conversation)


def test_the_hello_with_the_token_opens_the_conversation() -> None:
    conversation = ServerConnection(WELCOME, token=TokenCheck(TOKEN))
    conversation.receive_data(pack(Hello(token=TOKEN)) + pack(Stats()))
    assert isinstance(conversation.next_event(), Greeted)
    assert isinstance(conversation.next_event(), RequestReceived)
    assert conversation.authenticated
    (welcome,) = _replies(conversation)
    assert isinstance(welcome, Welcome)
    assert TOKEN not in json.dumps(welcome.model_dump())


def test_without_a_token_a_hello_token_is_ignored_and_hello_optional() -> None:
    conversation = ServerConnection(WELCOME)
    conversation.receive_data(pack(Stats()) + pack(Hello(token="anything")))
    assert isinstance(conversation.next_event(), RequestReceived)
    assert isinstance(conversation.next_event(), Greeted)


def test_the_check_compares_the_whole_token() -> None:
    check = TokenCheck(TOKEN)
    assert check.check(TOKEN)
    assert not check.check(TOKEN.upper())
    assert not check.check(None)
    assert TOKEN not in repr(check)
    with pytest.raises(ValueError, match="empty"):
        TokenCheck("")


# --- UDP -----------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _server(clock: Clock) -> ServerDatagrams:
    return ServerDatagrams(WELCOME, token=TokenCheck(TOKEN), clock=clock)


@pytest.mark.parametrize("request_", [Hello(token=TOKEN), *EVERY_REQUEST], ids=lambda m: m.type)
def test_an_unsealed_datagram_is_dropped_unanswered(request_: Request) -> None:
    event, reply = _server(Clock()).receive(pack(request_))
    assert event == Unauthenticated("not_sealed")
    assert reply is None


def test_a_sealed_datagram_is_served_and_its_replay_dropped() -> None:
    clock = Clock()
    server = _server(clock)
    client = ClientDatagrams(token=TOKEN, clock=clock)
    datagram = client.send(Stats())
    event, _ = server.receive(datagram)
    assert isinstance(event, DatagramRequest)
    assert isinstance(event.message, Stats)
    assert server.receive(datagram) == (Unauthenticated("replayed"), None)
    hello_event, welcome = server.receive(client.send(Hello()))
    assert isinstance(hello_event, Answered)
    assert welcome is not None
    assert b"welcome" in welcome


def test_a_seal_made_with_another_token_is_dropped() -> None:
    clock = Clock()
    forged = ClientDatagrams(token="guess", clock=clock).send(Stats())
    assert _server(clock).receive(forged) == (Unauthenticated("bad_mac"), None)


def test_a_changed_body_breaks_the_mac() -> None:
    clock = Clock()
    payload = decode_datagram(ClientDatagrams(token=TOKEN, clock=clock).send(Stats()))
    sealed = decode_sealed(payload)
    tampered = sealed.model_copy(update={"body": '{"type":"report"}'})
    datagram = pack(tampered)
    assert _server(clock).receive(datagram) == (Unauthenticated("bad_mac"), None)


@pytest.mark.parametrize("skew", [-31.0, 31.0, -3600.0])
def test_a_seal_outside_the_replay_window_is_dropped(skew: float) -> None:
    clock = Clock()
    datagram = seal(b'{"type":"stats"}', TOKEN, clock.now + skew)
    assert _server(clock).receive(datagram) == (Unauthenticated("outside_window"), None)


def test_within_the_window_a_skewed_clock_is_served() -> None:
    clock = Clock()
    datagram = seal(b'{"type":"stats"}', TOKEN, clock.now - 29.0)
    assert isinstance(_server(clock).receive(datagram)[0], DatagramRequest)


def test_the_tcp_only_rule_still_holds_once_sealed() -> None:
    clock = Clock()
    event, reply = _server(clock).receive(seal(b'{"type":"report"}', TOKEN, clock.now))
    assert isinstance(event, Rejected)
    assert reply is not None


def test_a_server_without_a_token_opens_a_seal_unchecked() -> None:
    server = ServerDatagrams(WELCOME)
    event, _ = server.receive(ClientDatagrams(token="any").send(Stats()))
    assert isinstance(event, DatagramRequest)
    assert isinstance(server.receive(pack(Stats()))[0], DatagramRequest)


def test_nonces_are_forgotten_after_the_window_and_a_full_cache_refuses_the_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth_module, "MAX_NONCES", 3)
    clock = Clock()
    opener = Opener(TokenCheck(TOKEN))
    first = [seal(b"{}", TOKEN, clock.now + i * 0.001)[4:] for i in range(5)]
    for payload in first:
        opener.open(payload, clock.now)
    assert opener.remembered == 3
    # The two forgotten nonces are older than the horizon: replaying them is refused.
    for payload in first:
        with pytest.raises(Unsealed, match="replayed"):
            opener.open(payload, clock.now)
    clock.now += 61.0
    opener.open(seal(b"{}", TOKEN, clock.now)[4:], clock.now)
    assert opener.remembered == 1
