"""The TCP conversation objects: every rule of the conversation, with no sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from forkwire.protocol import (
    Ack,
    Bye,
    Calc,
    CalcResult,
    ClientConnection,
    Error,
    ErrorCode,
    FrameTooLarge,
    Greeted,
    Hello,
    LocalProtocolError,
    Ping,
    Pong,
    Reading,
    ReadingsMsg,
    Rejected,
    RequestReceived,
    ServerConnection,
    State,
    Stats,
    StatsResult,
    TruncatedFrame,
    UnexpectedMessage,
    Welcome,
    encode_frame,
    pack,
)

WELCOME = Welcome(server="forkwire/test", max_frame=4096)


def server() -> ServerConnection:
    return ServerConnection(WELCOME, max_frame=4096)


def events(conversation: ServerConnection, data: bytes) -> list[Any]:
    """Feed ``data`` and drain every event it completes."""
    conversation.receive_data(data)
    found = []
    while (event := conversation.next_event()) is not None:
        found.append(event)
    return found


def replies(data: bytes) -> list[Any]:
    """The messages a client reads from ``data``."""
    client = ClientConnection()
    if data:
        client.receive_data(data)
    found = []
    while (message := client.next_event()) is not None:
        found.append(message)
    return found


def test_hello_is_answered_with_the_welcome() -> None:
    """hello gets the welcome the server was built with; the app only hears Greeted."""
    conversation = server()
    (event,) = events(conversation, pack(Hello(client="me")))
    assert isinstance(event, Greeted)
    assert event.hello.client == "me"
    assert replies(conversation.data_to_send()) == [WELCOME]
    assert conversation.state is State.OPEN


@pytest.mark.parametrize("version", [1, 2])
def test_the_welcome_speaks_the_version_asked_for(version: int) -> None:
    """A version 1 client is welcomed in version 1, a version 2 client in version 2."""
    conversation = server()
    assert conversation.version == 1  # before any hello
    events(conversation, pack(Hello(version=version)))
    (welcome,) = replies(conversation.data_to_send())
    assert isinstance(welcome, Welcome)
    assert welcome.version == version
    assert conversation.version == version


def test_another_version_is_refused_and_the_conversation_goes_on() -> None:
    """hello for version 9 is answered unsupported_version; requests are still served."""
    conversation = server()
    (rejected, request) = events(conversation, pack(Hello(version=9)) + pack(Stats()))
    assert isinstance(rejected, Rejected)
    assert isinstance(request, RequestReceived)
    (error,) = replies(conversation.data_to_send())
    assert isinstance(error, Error)
    assert error.code == ErrorCode.UNSUPPORTED_VERSION


def test_a_request_gets_exactly_one_reply() -> None:
    """A request is handed out with a handle; its reply is sent once, a second is a bug."""
    conversation = server()
    (event,) = events(conversation, pack(Calc(id=4, ops=["1"])))
    assert isinstance(event, RequestReceived)
    assert conversation.owed == 1
    conversation.reply(event.handle, CalcResult(id=4, results=[1]))
    assert replies(conversation.data_to_send()) == [CalcResult(id=4, results=[1])]
    assert conversation.owed == 0
    with pytest.raises(LocalProtocolError):
        conversation.reply(event.handle, CalcResult(id=4, results=[1]))


def test_readings_without_ack_are_answered_with_nothing() -> None:
    """A reply of None settles a request and sends no bytes."""
    conversation = server()
    batch = ReadingsMsg(items=[Reading(sensor="s", seq=0, ts=1.0, value=1)], ack=False)
    (event,) = events(conversation, pack(batch))
    conversation.reply(event.handle, None)
    assert conversation.data_to_send() == b""
    assert conversation.owed == 0


def test_bye_waits_for_every_earlier_reply() -> None:
    """bye is answered after the replies owed, in that order; then the conversation ends."""
    conversation = server()
    first, second = events(
        conversation, pack(Calc(id=1, ops=[])) + pack(Calc(id=2, ops=[])) + pack(Bye())
    )
    assert conversation.state is State.CLOSING
    assert conversation.data_to_send() == b""
    conversation.reply(second.handle, CalcResult(id=2, results=[]))
    conversation.reply(first.handle, CalcResult(id=1, results=[]))
    assert replies(conversation.data_to_send()) == [
        CalcResult(id=2, results=[]),
        CalcResult(id=1, results=[]),
        Bye(),
    ]
    assert conversation.state is State.CLOSED
    assert conversation.end_reason == "bye"


def test_nothing_after_bye_is_read() -> None:
    """Frames after bye are not requests any more."""
    conversation = server()
    assert events(conversation, pack(Bye()) + pack(Stats())) == []
    assert events(conversation, pack(Stats())) == []
    assert replies(conversation.data_to_send()) == [Bye()]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{nope", ErrorCode.BAD_JSON),
        (b"[1, 2]", ErrorCode.BAD_JSON),
        (b'{"type": "teleport"}', ErrorCode.UNKNOWN_TYPE),
        (b'{"type": "calc", "id": -1, "ops": []}', ErrorCode.BAD_MESSAGE),
        (b'{"type": "ack", "acked": {}}', ErrorCode.UNEXPECTED_MESSAGE),
        (b'{"type": "welcome", "server": "x", "max_frame": 1}', ErrorCode.UNEXPECTED_MESSAGE),
    ],
)
def test_a_bad_frame_is_answered_and_the_conversation_goes_on(payload: bytes, code: str) -> None:
    """A frame that is no valid request gets an error naming why; the next one is served."""
    conversation = server()
    rejected, request = events(conversation, encode_frame(payload) + pack(Stats()))
    assert isinstance(rejected, Rejected)
    assert rejected.error.code == code
    assert isinstance(request, RequestReceived)
    (error,) = replies(conversation.data_to_send())
    assert isinstance(error, Error)
    assert error.code == code
    assert conversation.frames_rejected == 1
    assert conversation.frames_received == 2


def test_a_bad_message_names_the_request_it_belonged_to() -> None:
    """The error's ref is the id of the calc that failed validation."""
    conversation = server()
    events(conversation, encode_frame(b'{"type": "calc", "id": 9, "ops": [1]}'))
    (error,) = replies(conversation.data_to_send())
    assert (error.code, error.ref) == (ErrorCode.BAD_MESSAGE, 9)


def test_an_oversized_frame_ends_the_conversation_after_the_good_ones() -> None:
    """Frames before a too-large header are answered; then frame_too_large and the end."""
    conversation = server()
    good, rejected = events(conversation, pack(Stats()) + (10**6).to_bytes(4, "big") + b"x")
    assert isinstance(good, RequestReceived)
    assert isinstance(rejected, Rejected)
    assert isinstance(rejected.error, FrameTooLarge)
    assert conversation.state is State.CLOSING
    conversation.reply(good.handle, StatsResult(counters={}))
    (error, stats) = replies(conversation.data_to_send())
    assert error.code == ErrorCode.FRAME_TOO_LARGE
    assert isinstance(stats, StatsResult)
    assert conversation.state is State.CLOSED
    assert events(conversation, pack(Stats())) == []


def test_a_closing_error_ends_the_conversation_once_the_rest_is_answered() -> None:
    """storage_unavailable: no more requests are read, the others owed are still sent."""
    conversation = server()
    readings, calc = events(
        conversation,
        pack(ReadingsMsg(items=[Reading(sensor="s", seq=0, ts=1.0, value=1)]))
        + pack(Calc(id=1, ops=[])),
    )
    conversation.reply(readings.handle, Error(code=ErrorCode.STORAGE_UNAVAILABLE, message="x"))
    assert conversation.state is State.CLOSING
    assert conversation.end_reason == ErrorCode.STORAGE_UNAVAILABLE
    assert events(conversation, pack(Stats())) == []
    conversation.reply(calc.handle, CalcResult(id=1, results=[]))
    assert [m.type for m in replies(conversation.data_to_send())] == ["error", "calc_result"]
    assert conversation.state is State.CLOSED


def test_end_of_stream_answers_what_is_owed_then_closes() -> None:
    """After EOF nothing new is read; the replies owed still go out, with no bye."""
    conversation = server()
    (event,) = events(conversation, pack(Calc(id=1, ops=[])))
    assert events(conversation, b"") == []
    assert conversation.state is State.CLOSING
    conversation.reply(event.handle, CalcResult(id=1, results=[]))
    assert replies(conversation.data_to_send()) == [CalcResult(id=1, results=[])]
    assert conversation.state is State.CLOSED
    assert conversation.end_reason == "eof"


def test_truncated_stream_event_carries_truncated_frame() -> None:
    """The Rejected event of a cut stream holds a TruncatedFrame."""
    conversation = server()
    conversation.receive_data(pack(Stats())[:-1])
    assert conversation.next_event() is None
    conversation.receive_data(b"")
    event = conversation.next_event()
    assert isinstance(event, Rejected)
    assert isinstance(event.error, TruncatedFrame)
    assert conversation.data_to_send() == b""


def test_the_client_cannot_send_after_bye() -> None:
    """Sending once the conversation is over is a bug of the caller."""
    client = ClientConnection()
    client.send(Bye())
    assert client.state is State.CLOSING
    with pytest.raises(LocalProtocolError):
        client.send(Stats())


def test_the_client_keeps_the_welcome_and_ends_on_bye() -> None:
    """A welcome is remembered; a bye from the server ends the conversation."""
    client = ClientConnection()
    client.receive_data(pack(WELCOME) + pack(Bye()) + pack(Stats()))
    assert client.next_event() == WELCOME
    assert client.welcome == WELCOME
    assert client.next_event() == Bye()
    assert client.state is State.CLOSED
    assert client.next_event() is None


def test_the_client_refuses_a_request_from_the_server() -> None:
    """A server that sends a calc broke the protocol: the client raises."""
    client = ClientConnection()
    client.receive_data(pack(Calc(id=1, ops=[])))
    with pytest.raises(UnexpectedMessage):
        client.next_event()


def test_the_client_sees_the_server_close_mid_frame() -> None:
    """EOF inside a frame from the server raises TruncatedFrame."""
    client = ClientConnection()
    client.receive_data(pack(WELCOME)[:5])
    client.receive_data(b"")
    with pytest.raises(TruncatedFrame):
        client.next_event()
    assert client.state is State.CLOSED


# --- the whole conversation, driven by hypothesis -----------------------------------------


class Conversation(RuleBasedStateMachine):
    """A client and a server object wired together, bytes split anywhere on the way.

    The application answers requests in any order. Invariants: every request gets exactly
    one reply (none for ``ack: false``), every bad frame one error, ``bye`` comes last and
    only when nothing is owed, and both sides agree the conversation is over.
    """

    @initialize()
    def start(self) -> None:
        self.server = server()
        self.client = ClientConnection()
        self.to_server = b""
        self.owed: dict[int, Any] = {}  # handle -> the reply the app will give
        self.expected: list[str] = []  # reply types the client must eventually read
        self.read: list[str] = []
        self.next_id = 0
        self.bye_sent = False

    def _deliver(self, cut: int) -> None:
        """Give the server part of what the client wrote, and handle what it completes."""
        chunk, self.to_server = self.to_server[:cut], self.to_server[cut:]
        if chunk:  # b"" would mean the end of the stream
            self.server.receive_data(chunk)
        while (event := self.server.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self.owed[event.handle] = _reply_for(event.message)

    def _read_replies(self) -> None:
        data = self.server.data_to_send()
        if data:  # b"" would mean the server closed
            self.client.receive_data(data)
        while (message := self.client.next_event()) is not None:
            self.read.append(message.type)

    @precondition(lambda self: not self.bye_sent)
    @rule(kind=st.sampled_from(["calc", "readings", "readings_no_ack", "stats", "hello", "ping"]))
    def client_sends(self, kind: str) -> None:
        self.next_id += 1
        item = Reading(sensor="s", seq=self.next_id, ts=1.0, value=1)
        message: Any = {
            "calc": Calc(id=self.next_id, ops=["1"]),
            "readings": ReadingsMsg(items=[item]),
            "readings_no_ack": ReadingsMsg(items=[item], ack=False),
            "stats": Stats(),
            "hello": Hello(),
            "ping": Ping(id=self.next_id),
        }[kind]
        self.to_server += self.client.send(message)
        reply = {"calc": "calc_result", "readings": "ack", "stats": "stats_result"}
        if kind in reply:
            self.expected.append(reply[kind])
        elif kind == "hello":
            self.expected.append("welcome")
        elif kind == "ping":
            self.expected.append("pong")

    @precondition(lambda self: not self.bye_sent)
    @rule(payload=st.sampled_from([b"{", b"null", b'{"type": "ack", "acked": {}}', b"{}"]))
    def client_sends_garbage(self, payload: bytes) -> None:
        self.to_server += encode_frame(payload)
        self.expected.append("error")

    @precondition(lambda self: not self.bye_sent)
    @rule()
    def client_says_bye(self) -> None:
        self.to_server += self.client.send(Bye())
        self.bye_sent = True

    @rule(data=st.data())
    def bytes_arrive(self, data: st.DataObject) -> None:
        cut = data.draw(st.integers(0, len(self.to_server)), label="cut")
        self._deliver(cut)
        self._read_replies()

    @precondition(lambda self: bool(self.owed))
    @rule(data=st.data())
    def app_answers_one(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(sorted(self.owed)), label="handle")
        self.server.reply(handle, self.owed.pop(handle))
        self._read_replies()

    @invariant()
    def bye_only_when_nothing_is_owed(self) -> None:
        if "bye" in self.read:
            assert self.read[-1] == "bye"
            assert not self.owed
            assert self.server.state is State.CLOSED
            assert self.client.state is State.CLOSED

    @invariant()
    def no_reply_is_invented(self) -> None:
        for kind in set(self.read) - {"bye"}:
            assert self.read.count(kind) <= self.expected.count(kind)

    def teardown(self) -> None:
        # Finish the conversation: everything arrives, the app answers everything.
        if not hasattr(self, "server"):
            return
        if not self.bye_sent and self.client.state is State.OPEN:
            self.to_server += self.client.send(Bye())
        self._deliver(len(self.to_server))
        for handle in sorted(self.owed):
            self.server.reply(handle, self.owed.pop(handle))
        self._read_replies()
        assert sorted(t for t in self.read if t != "bye") == sorted(self.expected)
        assert self.read[-1] == "bye"
        assert self.server.state is State.CLOSED
        assert self.client.state is State.CLOSED


def _reply_for(message: Any) -> Any:
    if isinstance(message, Calc):
        return CalcResult(id=message.id, results=[1])
    if isinstance(message, ReadingsMsg):
        return Ack(acked={"s": [(1, 1)]}) if message.ack else None
    if isinstance(message, Stats):
        return StatsResult(counters={})
    raise AssertionError(f"the server handed out {message!r}")


Conversation.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestConversation = Conversation.TestCase


def test_every_split_of_a_stream_gives_the_same_replies() -> None:
    """Fed whole, byte by byte, or split at every offset, the same frames get the same
    replies in the same order."""
    stream = (
        pack(Hello())
        + encode_frame(json.dumps({"type": "calc", "id": 1, "ops": ["2"]}).encode())
        + encode_frame(b"{broken")
        + pack(Stats())
        + pack(Bye())
    )

    def run(chunks: list[bytes]) -> list[Any]:
        conversation = server()
        out = b""
        for chunk in filter(None, chunks):  # b"" would be the end of the stream
            conversation.receive_data(chunk)
            while (event := conversation.next_event()) is not None:
                if isinstance(event, RequestReceived):
                    conversation.reply(event.handle, _reply_for(event.message))
            out += conversation.data_to_send()
        return replies(out)

    whole = run([stream])
    assert [m.type for m in whole] == ["welcome", "calc_result", "error", "stats_result", "bye"]
    assert run([bytes([b]) for b in stream]) == whole
    for cut in range(len(stream) + 1):
        assert run([stream[:cut], stream[cut:]]) == whole


# --- ping, and what the shell's clock needs -------------------------------------------------


def test_ping_is_answered_pong_at_once_and_hands_out_nothing() -> None:
    conversation = server()
    calc = events(conversation, pack(Calc(id=1, ops=["1"])) + pack(Ping(id=9)) + pack(Ping()))
    assert [type(e) for e in calc] == [RequestReceived]
    # The pongs leave before the calc's answer, which is still owed.
    assert replies(conversation.data_to_send()) == [Pong(id=9), Pong()]
    assert conversation.owed == 1


def test_the_frame_in_progress_is_numbered_for_the_shells_clock() -> None:
    conversation = server()
    frame = pack(Stats())
    assert conversation.frame_in_progress is None
    events(conversation, frame[:2])  # half a header is a frame begun
    assert conversation.in_frame
    assert conversation.frame_in_progress == 0
    events(conversation, frame[2:] + frame[:5])  # the first whole, the second begun
    assert conversation.frame_in_progress == 1
    events(conversation, frame[5:])
    assert conversation.frame_in_progress is None
    assert not conversation.in_frame


@pytest.mark.parametrize("code", [ErrorCode.IDLE_TIMEOUT, ErrorCode.FRAME_TIMEOUT])
def test_a_timeout_says_why_and_ends_once_the_rest_is_answered(code: ErrorCode) -> None:
    conversation = server()
    (request,) = events(conversation, pack(Calc(id=1, ops=["1"])) + pack(Stats())[:3])
    conversation.time_out(code, "too slow")
    assert conversation.state is State.CLOSING
    assert events(conversation, pack(Stats())) == []  # nothing more is read
    conversation.reply(request.handle, CalcResult(id=1, results=[1]))
    assert conversation.state is State.CLOSED
    assert [m.type for m in replies(conversation.data_to_send())] == ["error", "calc_result"]
    assert conversation.end_reason == code


def test_the_bytes_to_send_are_counted_until_taken() -> None:
    conversation = server()
    events(conversation, pack(Ping()))
    assert conversation.bytes_to_send == len(pack(Pong()))
    conversation.data_to_send()
    assert conversation.bytes_to_send == 0


_STREAM_PARTS = [
    pack(Hello()),
    pack(Calc(id=1, ops=["2", "3"])),
    pack(Ping(id=4)),
    encode_frame(b"{broken"),
    encode_frame(b'{"type": "welcome"}'),
    pack(Stats()),
    pack(ReadingsMsg(items=[Reading(sensor="s", seq=1, ts=1.0, value=1)], ack=False)),
    pack(Bye()),
    encode_frame(b"x" * 5000),  # over max_frame: ends the conversation
]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from(_STREAM_PARTS), max_size=8),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    eof=st.booleans(),
)
def test_any_split_of_any_stream_gives_the_same_events(
    parts: list[bytes], cuts: list[int], eof: bool
) -> None:
    """Property: however the transport splits a byte stream, the conversation hands out
    the same events, sends the same bytes, and ends in the same state."""
    stream = b"".join(parts)

    def run(chunks: list[bytes]) -> tuple[list[Any], bytes, State, int | None]:
        conversation = server()
        seen: list[Any] = []
        out = b""
        for chunk in [*filter(None, chunks), *([b""] if eof else [])]:
            conversation.receive_data(chunk)
            while (event := conversation.next_event()) is not None:
                # A Rejected holds an exception, which compares by identity: its code and
                # message are what the conversation said.
                seen.append(
                    (event.error.code, event.error.message)
                    if isinstance(event, Rejected)
                    else event
                )
                if isinstance(event, RequestReceived):
                    conversation.reply(event.handle, _reply_for(event.message))
            out += conversation.data_to_send()
        return seen, out, conversation.state, conversation.frame_in_progress

    offsets = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *offsets], [*offsets, len(stream)], strict=True)]
    assert run(chunks) == run([stream])
