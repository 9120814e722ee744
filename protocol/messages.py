"""Messages of wire protocol v1.

Every payload is one JSON object whose ``type`` picks the model. Models are frozen and
strict: a string is never coerced into a number or the other way round, and unknown
fields are rejected, so a typo in a client shows up as a ``bad_message`` at once.

Each direction has its own union: :data:`Request` is what a client sends, :data:`Reply`
what a server sends (``bye`` is both). A message of the other direction is refused as
``unexpected_message``, so neither side can be handed something only it may send.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any, Final, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from forkwire.protocol.errors import (
    BadJSON,
    BadMessage,
    ProtocolError,
    UnexpectedMessage,
    UnknownType,
)
from forkwire.protocol.framing import encode_frame
from forkwire.protocol.report import AnalyticsReport, FillMethod

#: The version this code speaks. Version 2 added a producer to readings, the ``conflict``
#: error and ``error.keys``; a server still greets a version 1 client (section 3 of
#: PROTOCOL.md), whose readings belong to the anonymous producer. Version 3 added
#: ``ping``/``pong`` and the limits' codes (``busy``, ``idle_timeout``, ``frame_timeout``).
PROTOCOL_VERSION: Final = 3
SUPPORTED_VERSIONS: Final = frozenset({1, 2, 3})

#: The port a server listens on, TCP and UDP, and a client asks, unless told otherwise.
DEFAULT_PORT: Final = 7700

#: A sensor name is used as a file name and a database key by the consumers, so it keeps
#: to a portable alphabet.
SENSOR_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"

#: Ids and seqs fit a signed 64-bit integer (SQLite's and PostgreSQL's BIGINT).
MAX_INT64: Final = 2**63 - 1

JobId: TypeAlias = Annotated[int, Field(ge=0, le=MAX_INT64)]
Seq: TypeAlias = Annotated[int, Field(ge=0, le=MAX_INT64)]
SensorName: TypeAlias = Annotated[str, Field(pattern=SENSOR_PATTERN)]
#: A producer is a client's stream of readings, kept with its outbox (Kafka's producer id):
#: the same alphabet as a sensor name; forkwire's clients use 32 random hex digits.
ProducerId: TypeAlias = Annotated[str, Field(pattern=SENSOR_PATTERN)]
FiniteFloat: TypeAlias = Annotated[float, Field(allow_inf_nan=False)]

#: The latest ``ts`` a reading may carry: 9999-12-31T23:59:59Z. With the earliest, 0 (the
#: epoch), it keeps every span and rate the analytics compute a finite, non-zero float.
MAX_TS: Final = 253_402_300_799.0
#: The largest magnitude of a float in a reading's value (scalar, vector component or a
#: number in a record): far below float's 1.8e308, so sums and norms of many readings
#: stay finite.
MAX_VALUE: Final = 1e300
#: Ints in a value keep to a signed 64-bit integer: a larger one has no exact float and
#: no column type in the other consumers of a store.
MAX_VALUE_INT: Final = MAX_INT64
#: A reading's timestamp: finite UNIX seconds from 0 to :data:`MAX_TS`.
Timestamp: TypeAlias = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=MAX_TS)]
#: A reading's value: a scalar, a vector, or a record (a JSON object).
Value: TypeAlias = int | FiniteFloat | list[FiniteFloat] | dict[str, JsonValue]
Number: TypeAlias = int | float


class _Message(BaseModel):
    # Built on first use, not at import: a client that speaks calc builds four of these
    # models, not all of them (about 40 ms of every command's start, measured). The
    # attribute docstrings are the field descriptions of the JSON Schema; reading them
    # means parsing this file's source, so ``schema.py`` does it, not every import.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, defer_build=True)


# --- requests: client to server ---------------------------------------------------------


class Hello(_Message):
    """Opens a conversation; optional, a client that skips it speaks v1."""

    type: Literal["hello"] = "hello"
    version: int = PROTOCOL_VERSION
    """The protocol version the client speaks; this server speaks 1."""
    client: str = Field(default="", max_length=200)
    """Free text naming the client program, for the server's log."""
    token: str | None = None
    """The server's shared token, when it requires one (its ``--token``); a server without
    one ignores it. Send it over TLS only: it is a password."""


class Calc(_Message):
    """One compute job: the expressions are answered together, in this order."""

    type: Literal["calc"] = "calc"
    id: JobId
    """Chosen by the client, echoed in the answer; 0 to 2**63-1."""
    ops: list[str]
    """Arithmetic expressions, one per item, in any number (the frame bounds them)."""


class Reading(_Message):
    """One measurement; ``(sensor, seq)`` is its idempotency key."""

    sensor: SensorName
    """The stream: 1 to 64 of A-Z a-z 0-9 _ . -"""
    seq: Seq
    """The reading's number in its stream, 0 to 2**63-1, consecutive: a missing seq is a
    lost reading."""
    ts: Timestamp
    """When it was measured, UNIX seconds from 0 to 253402300799 (year 9999)."""
    value: Value
    """An int, a finite float, a list of finite floats, or a JSON object (a record). Every
    number in it, nested ones included: a float of magnitude at most 1e300, an int within
    +-(2**63-1)."""

    @field_validator("value")
    @classmethod
    def _bounded_numbers(cls, value: Value) -> Value:
        problem = _out_of_range(value)
        if problem is not None:
            raise ValueError(
                f"{problem} is out of range: a value's floats must be within +-1e300 and "
                "its ints within +-(2**63-1)"
            )
        return value


def _out_of_range(value: object) -> str | None:
    """The first number in a reading's value beyond the limits, shortened, or None."""
    # Iterative: a record nested as deep as the JSON parser allows must not hit Python's
    # recursion limit here.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int):
            if abs(item) > MAX_VALUE_INT:
                text = (
                    str(item) if item.bit_length() < 200 else f"an int of {len(str(item))} digits"
                )
                return text if len(text) <= 40 else text[:37] + "..."
        elif isinstance(item, float):
            if not abs(item) <= MAX_VALUE:  # also catches NaN
                return repr(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


class ReadingMsg(Reading):
    """A single reading sent on its own."""

    type: Literal["reading"] = "reading"
    producer: ProducerId | None = None
    """Who sent it (version 2): with the sensor and seq, the key it is stored under;
    null: the anonymous producer."""
    ack: bool = True
    """False asks for no ``ack`` (fire-and-forget, as over UDP); errors still come."""


class ReadingsMsg(_Message):
    """A batch of readings in one frame, acked together."""

    type: Literal["readings"] = "readings"
    producer: ProducerId | None = None
    """Who sent them (version 2): with each sensor and seq, the key they are stored
    under; null: the anonymous producer."""
    items: list[Reading] = Field(min_length=1)
    """At least one reading; any sensors, any order."""
    ack: bool = True
    """False asks for no ``ack``; errors still come."""


class Stats(_Message):
    """Asks for the server's counters."""

    type: Literal["stats"] = "stats"


class Report(_Message):
    """Asks for the analytics of the stored streams."""

    type: Literal["report"] = "report"
    sensors: list[SensorName] | None = None
    """Only these sensors; null: every sensor."""
    since: FiniteFloat | None = None
    """Only readings with ts >= since (UNIX seconds); null: all."""
    fill: FillMethod = "linear"
    """The fill method whose ``filled`` count each sensor reports."""
    max_gap: Annotated[int, Field(ge=0)] | None = None
    """Gaps of more missing seqs than this are not filled; null: no limit."""


#: The most observed readings one ``series_result`` carries.
MAX_SERIES_LIMIT: Final = 100_000


class Series(_Message):
    """Asks for one page of a sensor's stored readings, gaps filled, in seq order.

    A page holds up to ``limit`` observed readings with ``seq > after`` and the filled
    points of the gap before each of them; ``series_result.next`` is the ``after`` of the
    next page. A gap is filled between two observed readings whose values are both
    numbers, or both lists of numbers of one length; nothing is invented before the first
    or after the last reading.
    """

    type: Literal["series"] = "series"
    sensor: SensorName
    """The sensor."""
    producer: ProducerId | None = None
    """Whose readings of it (a sensor's seqs count per producer); null: the anonymous
    producer. The report lists each sensor's producers."""
    since: FiniteFloat | None = None
    """Only readings with ts >= since (UNIX seconds); null: all."""
    fill: FillMethod = "none"
    """How gaps are filled: linear (against time), previous, or none."""
    max_gap: Annotated[int, Field(ge=0)] | None = None
    """Gaps of more missing seqs than this are not filled; null: no limit (one page may
    add at most 1,000,000 filled points, else the request is refused: set max_gap)."""
    after: Seq | None = None
    """Start after this seq (the ``next`` of the previous page); null: from the first."""
    limit: Annotated[int, Field(ge=1, le=MAX_SERIES_LIMIT)] = 10_000
    """Observed readings in this page, 1 to 100,000."""


class Bye(_Message):
    """Ends a conversation; the server answers after everything sent before it."""

    type: Literal["bye"] = "bye"


class Ping(_Message):
    """Asks for a ``pong`` (version 3): a keepalive for a connection with nothing else to
    say, which the server's ``idle_timeout`` would otherwise close."""

    type: Literal["ping"] = "ping"
    id: JobId | None = None
    """Echoed in the ``pong``; optional."""


# --- replies: server to client ----------------------------------------------------------


class Pong(_Message):
    """The answer to ``ping``, at once, before replies to earlier requests that take time."""

    type: Literal["pong"] = "pong"
    id: JobId | None = None
    """The ``id`` of the ``ping``."""


class Welcome(_Message):
    """The server's answer to ``hello``: what it speaks and what it accepts."""

    type: Literal["welcome"] = "welcome"
    version: int = PROTOCOL_VERSION
    """The protocol version of this conversation."""
    server: str
    """The server program and its version, e.g. ``forkwire/0.1.0``."""
    max_frame: int
    """The largest request frame the server reads, in bytes."""
    limits: dict[str, int | float] = Field(default_factory=dict)
    """The server's limits by name: max_length, max_depth, max_digits (of an expression),
    workers (jobs run at once), job_timeout (seconds)."""


class CalcError(_Message):
    """Why the expression at ``index`` of a job has no value."""

    index: int
    """The position of the expression in ``calc.ops``."""
    code: str
    """Why: one of the expression codes (syntax, division_by_zero, overflow, ...)."""
    message: str
    """A human-readable explanation."""


class CalcResult(_Message):
    """The answer to ``calc``: ``results[i]`` is ``None`` exactly when an error names ``i``."""

    type: Literal["calc_result"] = "calc_result"
    id: JobId
    """The id of the ``calc`` this answers."""
    results: list[Number | None]
    """One per expression, in order: an int (any size), a float, or null."""
    errors: list[CalcError] = Field(default_factory=list)
    """One per null in ``results``."""


class Ack(_Message):
    """What was committed to storage."""

    type: Literal["ack"] = "ack"
    acked: dict[str, list[tuple[int, int]]]
    """Sensor to inclusive ``[first, last]`` runs of consecutive seqs: every reading of
    the request, committed (now, or before: a duplicate)."""
    duplicates: int = 0
    """How many of them were stored already (acked again, not stored twice)."""


class StatsResult(_Message):
    """Counters of the running server."""

    type: Literal["stats_result"] = "stats_result"
    counters: dict[str, int | float]
    """By name; see PROTOCOL.md for the names. A name not there yet reads as 0."""


class ReportResult(_Message):
    """The analytics report, the same JSON that ``forkwire report`` writes."""

    type: Literal["report_result"] = "report_result"
    report: AnalyticsReport
    """When it was made and each sensor's analytics."""


class SeriesResult(_Message):
    """One page of a sensor's points, as parallel arrays of equal length."""

    type: Literal["series_result"] = "series_result"
    sensor: SensorName
    """The sensor."""
    producer: str = ""
    """The producer ("": the anonymous one)."""
    seq: list[int]
    """Each point's seq, increasing."""
    ts: list[float]
    """Each point's ts, UNIX seconds; a filled point's lies on the line between its
    neighbours' by seq."""
    value: list[Value]
    """The stored value, or for a filled point the estimate."""
    filled: list[bool]
    """True for the points the fill method added."""
    received_at: list[float | None]
    """UNIX time of the commit that stored the reading; null for a filled point."""
    next: int | None = None
    """The ``after`` of the next page; null when this page is the last."""

    @model_validator(mode="after")
    def _same_length(self) -> SeriesResult:
        sizes = {len(self.ts), len(self.value), len(self.filled), len(self.received_at)}
        if sizes != {len(self.seq)}:
            raise ValueError("seq, ts, value, filled and received_at must be equally long")
        return self


class Error(_Message):
    """The server's answer to bad input or a request it could not do."""

    type: Literal["error"] = "error"
    code: str
    """Why (see ``codes.ErrorCode``); a client must accept codes it does not know."""
    message: str
    """A human-readable explanation."""
    ref: int | str | None = None
    """The ``id`` of the request it answers, when the server could read one."""
    keys: dict[str, list[tuple[int, int]]] | None = None
    """The readings the error is about, as in ``ack.acked`` (``conflict`` names the
    readings refused); null otherwise."""
    retry_after: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    """Seconds the client should wait before it tries again (``storage_unavailable``: it
    grows while the outage lasts); null: no advice."""


Request: TypeAlias = Annotated[
    Hello | Calc | ReadingMsg | ReadingsMsg | Stats | Report | Series | Bye | Ping,
    Field(discriminator="type"),
]
Reply: TypeAlias = Annotated[
    Welcome | CalcResult | Ack | StatsResult | ReportResult | SeriesResult | Bye | Error | Pong,
    Field(discriminator="type"),
]
#: Any message of either direction.
Message: TypeAlias = (
    Hello
    | Calc
    | ReadingMsg
    | ReadingsMsg
    | Stats
    | Report
    | Series
    | Bye
    | Welcome
    | CalcResult
    | Ack
    | StatsResult
    | ReportResult
    | SeriesResult
    | Error
    | Ping
    | Pong
)


class Sealed(_Message):
    """A UDP datagram's proof of the token (a server with a token reads no other): the
    request's JSON in ``body``, and an HMAC-SHA256 over it keyed by the token. Never sent
    over TCP, where ``hello`` carries the token once."""

    type: Literal["sealed"] = "sealed"
    ts: Annotated[int, Field(ge=0, le=MAX_INT64)]
    """When it was sealed, UNIX milliseconds: the server refuses one more than 30 s from
    its clock (the replay window)."""
    nonce: str = Field(pattern=r"^[0-9a-f]{16,64}$")
    """16 to 64 hex digits, random per datagram: the server refuses a nonce it has seen
    within the window (a replay)."""
    mac: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex HMAC-SHA256, keyed by the token's UTF-8 bytes, of ``forkwire-udp-v1\n``, the
    decimal ``ts``, ``\n``, the ``nonce``, ``\n``, and the ``body``'s UTF-8 bytes."""
    body: str
    """The request, one JSON object as it would be a frame's payload."""


def decode_sealed(payload: bytes) -> Sealed:
    """Parse a sealed datagram's payload; raises pydantic's ValidationError."""
    return Sealed.model_validate_json(payload)


# The unions' validators, built on first use (a client never needs the requests').
@functools.cache
def _requests() -> TypeAdapter[Request]:
    return TypeAdapter(Request)


@functools.cache
def _replies() -> TypeAdapter[Reply]:
    return TypeAdapter(Reply)


def build_validators() -> None:
    """Build every validator now rather than on first use: a server calls this as it
    starts, so that its first client does not wait for them."""
    _requests()
    _replies()
    models: list[type[_Message]] = [*_REQUEST_MODELS.values(), *_REPLY_MODELS.values(), Sealed]
    for model in models:
        model.model_rebuild()


def _by_tag(union: object) -> dict[bytes, type[_Message]]:
    """The models of a discriminated union (``Request``, ``Reply``), by their ``type``."""
    members: tuple[type[_Message], ...] = get_args(get_args(union)[0])
    return {model.model_fields["type"].default.encode(): model for model in members}


_REQUEST_MODELS: Final = _by_tag(Request)
_REPLY_MODELS: Final = _by_tag(Reply)
REQUEST_TYPES: Final = frozenset(tag.decode() for tag in _REQUEST_MODELS)
REPLY_TYPES: Final = frozenset(tag.decode() for tag in _REPLY_MODELS)

_TAG_ERRORS: Final = frozenset({"union_tag_invalid", "union_tag_not_found"})


def encode_message(message: _Message) -> bytes:
    """Serialize a message to its JSON payload (without the frame header)."""
    return message.model_dump_json().encode()


def pack(message: _Message) -> bytes:
    """Encode a message and frame it, ready for a stream or a datagram."""
    return encode_frame(message.model_dump_json().encode())


#: A payload that starts with its ``type``, as every forkwire program writes it.
_LEADING_TYPE: Final = re.compile(rb'\{\s*"type"\s*:\s*"([a-z_]{1,20})"')


def _by_leading_type(payload: bytes, models: dict[bytes, type[_Message]]) -> Any:
    """The message, validated by the model its leading ``type`` names; None when it has
    none or does not validate (the union then decides, and words the error).

    The same verdict as the union's, whose tag picks the same model: this only spares a
    program that uses a few messages the building of every other model.
    """
    found = _LEADING_TYPE.match(payload)
    model = models.get(found[1]) if found is not None else None
    if model is None:
        return None
    try:
        return model.model_validate_json(payload)
    except ValidationError:
        return None


def decode_request(payload: bytes) -> Request:
    """Parse and validate one payload a client sent.

    Raises:
        BadJSON: the payload is not UTF-8 JSON, or not an object.
        UnknownType: no ``type``, or one no message of this version has.
        UnexpectedMessage: a message only a server sends.
        BadMessage: a known request whose fields are wrong.
    """
    message: Request | None = _by_leading_type(payload, _REQUEST_MODELS)
    if message is not None:
        return message
    try:
        return _requests().validate_json(payload)
    except ValidationError as exc:
        raise _classify(exc, payload, REPLY_TYPES - REQUEST_TYPES, "a client") from None


def decode_reply(payload: bytes) -> Reply:
    """Parse and validate one payload a server sent; raises as :func:`decode_request`."""
    message: Reply | None = _by_leading_type(payload, _REPLY_MODELS)
    if message is not None:
        return message
    try:
        return _replies().validate_json(payload)
    except ValidationError as exc:
        raise _classify(exc, payload, REQUEST_TYPES - REPLY_TYPES, "a server") from None


def _classify(
    exc: ValidationError, payload: bytes, other_side: frozenset[str], sender: str
) -> ProtocolError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return BadJSON(f"payload is not valid JSON: {first['msg']}")
    if not first["loc"]:
        if first["type"] in _TAG_ERRORS:
            tag = _read_tag(payload)
            if tag in other_side:
                return UnexpectedMessage(
                    f"{sender} does not send '{tag}'", ref=_recover_ref(payload)
                )
            return UnknownType(f"payload needs a known 'type': {first['msg']}")
        return BadJSON("payload must be a JSON object")
    shown = "; ".join(_describe(error) for error in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return BadMessage(f"{first['loc'][0]}: {shown}{more}", ref=_recover_ref(payload))


def _describe(error: Any) -> str:
    # The first loc item is the union tag ("calc"); the field path follows it.
    loc = ".".join(str(part) for part in error["loc"][1:]) or "payload"
    return f"{loc}: {error['msg']}"


def _parse(payload: bytes) -> object:
    # Only on the error path: a second parse is cheap next to a bad frame's round trip.
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _read_tag(payload: bytes) -> object:
    obj = _parse(payload)
    return obj.get("type") if isinstance(obj, dict) else None


def _recover_ref(payload: bytes) -> int | str | None:
    obj = _parse(payload)
    ref = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(ref, int | str) and not isinstance(ref, bool):
        return ref
    return None
