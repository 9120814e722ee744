"""The conversation over TCP, sans-IO: one object per side, in the manner of h11.

Each object takes the bytes its transport received (:meth:`receive_data`; ``b""`` is the
end of the stream), hands out what they mean one event at a time (:meth:`next_event`,
None when it needs more bytes), and turns messages into bytes to write. It holds the
state of the conversation and every rule of it; the TCP shells of the server and the
client only move bytes.

The server's rules, in one place:

* a frame over ``max_frame`` is answered with ``frame_too_large`` and ends the
  conversation: the stream position is lost;
* a payload that is not JSON, has no known ``type``, is a message only a server sends, or
  fails validation is answered with an ``error`` and the conversation goes on;
* ``hello`` is optional (a client that skips it speaks v1); the welcome answers in the
  version the hello asked for, and one naming a version this server does not speak is
  answered ``unsupported_version``, and the conversation goes on in v1;
* every request gets exactly one reply, except readings sent with ``ack: false`` (none
  unless it is an ``error``); replies to requests that take time (jobs, readings, reports)
  are sent as they complete, so they may overtake each other and later quick replies;
* ``ping`` is answered ``pong`` at once, by the conversation (no request is handed out);
* when the shell's clock says the client took too long (:meth:`ServerConnection.time_out`:
  no first request, no frame for ``idle_timeout``, a frame left half-sent), the error
  says which and the conversation ends like after a closing error;
* after ``bye`` nothing more is read; the ``bye`` answer is sent once every earlier
  request is answered, and the conversation ends;
* after the end of the stream, what is owed is still sent, then the conversation ends;
* an error with a closing code (:data:`~forkwire.protocol.codes.CLOSING_CODES`) ends the
  conversation once the other replies owed are sent.
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter, deque
from dataclasses import dataclass
from typing import Final

from forkwire.protocol.codes import CLOSING_CODES, ErrorCode
from forkwire.protocol.errors import (
    LocalProtocolError,
    ProtocolError,
    TruncatedFrame,
    UnsupportedVersion,
)
from forkwire.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder
from forkwire.protocol.messages import (
    SUPPORTED_VERSIONS,
    Bye,
    Error,
    Hello,
    Ping,
    Pong,
    Reply,
    Request,
    Welcome,
    decode_reply,
    decode_request,
    pack,
)

#: Replies can be larger than requests (a job of 1,000 failing expressions answers with
#: 1,000 messages), so a client accepts more than the server's default max_frame.
CLIENT_MAX_FRAME: Final = 64 * 1024 * 1024


class State(enum.Enum):
    """Where a conversation is."""

    #: Requests are read and answered.
    OPEN = "open"
    #: Nothing more is read (``bye``, end of stream, or a closing error); replies owed are
    #: still sent. On the client: ``bye`` was sent, its answer not yet received.
    CLOSING = "closing"
    #: Nothing more goes either way: write what :meth:`data_to_send` holds, then close.
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request the application answers with :meth:`ServerConnection.reply`."""

    handle: int
    message: Request
    #: The payload's size in bytes: what the request costs to hold until it is answered.
    size: int = 0


@dataclass(frozen=True, slots=True)
class Greeted:
    """A ``hello`` arrived and was answered with the welcome."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame broke the protocol; the ``error`` reply is already queued (if any)."""

    error: ProtocolError


ServerEvent = RequestReceived | Greeted | Rejected


def negotiate(hello: Hello, welcome: Welcome) -> Welcome:
    """The welcome that answers ``hello``: in the version it asked for.

    Raises:
        UnsupportedVersion: this side does not speak that version.
    """
    if hello.version not in SUPPORTED_VERSIONS:
        spoken = ", ".join(map(str, sorted(SUPPORTED_VERSIONS)))
        raise UnsupportedVersion(f"this server speaks versions {spoken}, not {hello.version}")
    if welcome.version == hello.version:
        return welcome
    return welcome.model_copy(update={"version": hello.version})


class ServerConnection:
    """The server's side of one TCP conversation.

    Args:
        welcome: the answer to every ``hello``.
        max_frame: the largest request frame read; a larger header ends the conversation.
    """

    def __init__(self, welcome: Welcome, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.welcome = welcome
        self.state = State.OPEN
        #: The version of this conversation: 1 until a hello asks for another.
        self.version = 1
        #: Why the conversation stopped reading: ``bye``, ``eof``, or an error code.
        self.end_reason: str | None = None
        self.frames_received = 0
        self.frames_sent = 0
        self.frames_rejected = 0
        #: ``("in", type)`` per frame read (``"invalid"`` when it does not decode),
        #: ``("out", type)`` per frame queued, ``("error", code)`` per error queued. A
        #: server may replace it with one Counter shared by all its conversations.
        self.tally: Counter[tuple[str, str]] = Counter()
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._payloads: deque[bytes] = deque()
        self._fatal: ProtocolError | None = None  # a bad header, after the good frames
        self._eof = False
        self._out = bytearray()
        self._owed: set[int] = set()
        self._handles = itertools.count()
        self._bye_owed = False

    @property
    def owed(self) -> int:
        """Requests received and not yet answered."""
        return len(self._owed)

    @property
    def in_frame(self) -> bool:
        """Whether part of a frame has arrived and the rest has not (the shell's clock)."""
        return self.state is State.OPEN and self._decoder.in_frame

    @property
    def frame_in_progress(self) -> int | None:
        """The number of the frame partly received (0 is the first), or None: between
        frames. A new number is a new frame, whose clock starts now."""
        if not self.in_frame:
            return None
        return self._decoder.completed

    @property
    def bytes_buffered(self) -> int:
        """Bytes of a frame partly received, held until the rest comes."""
        return self._decoder.buffered

    @property
    def bytes_to_send(self) -> int:
        """Bytes queued for :meth:`data_to_send`: the shell counts them as unsent."""
        return len(self._out)

    def receive_data(self, data: bytes) -> None:
        """Add what the transport received; ``b""`` means the stream ended."""
        if self.state is not State.OPEN or self._eof or self._fatal is not None:
            return
        if not data:
            self._eof = True
            return
        try:
            self._payloads.extend(self._decoder.feed(data))
        except ProtocolError as exc:
            self._fatal = exc
            return
        if self._decoder.error is not None:
            # Good frames came before the bad header: they are answered first.
            self._fatal = self._decoder.error

    def next_event(self) -> ServerEvent | None:
        """The next thing the client said, or None until more bytes arrive."""
        while self.state is State.OPEN:
            if not self._payloads:
                return self._at_end_of_input()
            payload = self._payloads.popleft()
            self.frames_received += 1
            try:
                message = self._decode(payload)
            except ProtocolError as exc:
                return self._reject(exc)
            if isinstance(message, Hello):
                try:
                    welcome = negotiate(message, self.welcome)
                except UnsupportedVersion as exc:
                    return self._reject(exc)
                self.version = welcome.version
                self._queue(welcome)
                return Greeted(message)
            if isinstance(message, Ping):
                self._queue(Pong(id=message.id))
                continue
            if isinstance(message, Bye):
                self._bye_owed = True
                self._stop_reading("bye")
                continue
            handle = next(self._handles)
            self._owed.add(handle)
            return RequestReceived(handle, message, len(payload))
        return None

    def reply(self, handle: int, message: Reply | None) -> None:
        """Answer the request ``handle`` named; None answers a reading sent without ``ack``.

        Raises:
            LocalProtocolError: that request was answered already, or never received.
        """
        if handle not in self._owed:
            raise LocalProtocolError(f"request {handle} is not waiting for a reply")
        self._owed.remove(handle)
        if self.state is State.CLOSED:
            return
        if message is not None:
            self._queue(message)
            if isinstance(message, Error) and message.code in CLOSING_CODES:
                self._stop_reading(message.code)
        self._finish_if_done()

    def time_out(self, code: ErrorCode, message: str) -> None:
        """The client took too long (the shell keeps the clock): say why, read no more;
        the replies owed are still sent, then the conversation ends."""
        if self.state is not State.OPEN:
            return
        self._queue(Error(code=code, message=message))
        self._stop_reading(code)

    def data_to_send(self) -> bytes:
        """The bytes to write now (and forget here)."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def _at_end_of_input(self) -> ServerEvent | None:
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            event = self._reject(fatal)
            self._stop_reading(fatal.code)
            return event
        if self._eof:
            try:
                self._decoder.eof()
            except TruncatedFrame as exc:
                # Nothing to answer: the client stopped sending in the middle of a frame.
                self._stop_reading("eof")
                return Rejected(exc)
            self._stop_reading("eof")
        return None

    def _reject(self, error: ProtocolError) -> Rejected:
        self.frames_rejected += 1
        self._queue(Error(code=error.code, message=error.message, ref=error.ref))
        return Rejected(error)

    def _stop_reading(self, reason: str) -> None:
        if self.state is State.OPEN:
            self.state = State.CLOSING
            self.end_reason = reason
            self._payloads.clear()
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if self.state is State.CLOSING and not self._owed:
            if self._bye_owed:
                self._queue(Bye())
            self.state = State.CLOSED

    def _decode(self, payload: bytes) -> Request:
        try:
            message = decode_request(payload)
        except ProtocolError:
            self.tally["in", "invalid"] += 1
            raise
        self.tally["in", message.type] += 1
        return message

    def _queue(self, message: Reply) -> None:
        self._out += pack(message)
        self.frames_sent += 1
        self.tally["out", message.type] += 1
        if isinstance(message, Error):
            self.tally["error", message.code] += 1


class ClientConnection:
    """The client's side of one TCP conversation.

    Replies come out of :meth:`next_event` as messages; a server that breaks the protocol
    raises, since a client has nobody to report it to but its caller.
    """

    def __init__(self, *, max_frame: int = CLIENT_MAX_FRAME) -> None:
        self.state = State.OPEN
        #: The server's answer to our ``hello``, once it came.
        self.welcome: Welcome | None = None
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._payloads: deque[bytes] = deque()
        self._eof = False

    def send(self, message: Request) -> bytes:
        """The bytes of one request.

        Raises:
            LocalProtocolError: the conversation is over (``bye`` sent, or closed).
        """
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send {message.type!r}: the conversation is over")
        if isinstance(message, Bye):
            self.state = State.CLOSING
        return pack(message)

    def receive_data(self, data: bytes) -> None:
        """Add what the transport received; ``b""`` means the server closed.

        Raises:
            FrameTooLarge: the server declared a frame over ``max_frame``.
        """
        if not data:
            self._eof = True
            return
        if self.state is State.CLOSED:
            return
        self._payloads.extend(self._decoder.feed(data))

    def next_event(self) -> Reply | None:
        """The next message from the server, or None: more bytes needed, or (once
        :attr:`state` is CLOSED) the conversation is over.

        Raises:
            ProtocolError: the server sent a bad frame, or stopped inside one.
        """
        if self._payloads:
            message = decode_reply(self._payloads.popleft())
            if isinstance(message, Welcome):
                self.welcome = message
            elif isinstance(message, Bye):
                self.state = State.CLOSED
                self._payloads.clear()
            return message
        if self._eof and self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._decoder.eof()
        return None
