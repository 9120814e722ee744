"""Messages of wire protocol v1.

Every payload is one JSON object whose ``type`` picks the model. Models are frozen and
strict: a string is never coerced into a number or the other way round, and unknown
fields are rejected, so a typo in a client shows up as a ``bad_message`` at once.

Each direction has its own union: :data:`Request` is what a client sends, :data:`Reply`
what a server sends (``bye`` is both). A message of the other direction is refused as
``unexpected_message``, so neither side can be handed something only it may send.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
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

PROTOCOL_VERSION: Final = 1

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
FiniteFloat: TypeAlias = Annotated[float, Field(allow_inf_nan=False)]
#: A reading's value: a scalar, a vector, or a record (a JSON object).
Value: TypeAlias = int | FiniteFloat | list[FiniteFloat] | dict[str, JsonValue]
Number: TypeAlias = int | float


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# --- requests: client to server ---------------------------------------------------------


class Hello(_Message):
    """Opens a conversation; optional, a client that skips it speaks v1."""

    type: Literal["hello"] = "hello"
    version: int = PROTOCOL_VERSION
    client: str = Field(default="", max_length=200)
    token: str | None = None


class Calc(_Message):
    """One compute job: the expressions are answered together, in this order."""

    type: Literal["calc"] = "calc"
    id: JobId
    ops: list[str]


class Reading(_Message):
    """One measurement; ``(sensor, seq)`` is its idempotency key. ``ts`` is UNIX seconds."""

    sensor: SensorName
    seq: Seq
    ts: FiniteFloat
    value: Value


class ReadingMsg(Reading):
    """A single reading sent on its own."""

    type: Literal["reading"] = "reading"
    #: False asks for no ``ack`` (fire-and-forget, used over UDP).
    ack: bool = True


class ReadingsMsg(_Message):
    """A batch of readings in one frame."""

    type: Literal["readings"] = "readings"
    items: list[Reading] = Field(min_length=1)
    ack: bool = True


class Stats(_Message):
    """Asks for the server's counters."""

    type: Literal["stats"] = "stats"


class Report(_Message):
    """Asks for the analytics of the stored streams (all, or ``sensors``; ts >= ``since``).

    ``fill`` and ``max_gap`` decide each sensor's ``filled`` count.
    """

    type: Literal["report"] = "report"
    sensors: list[SensorName] | None = None
    since: FiniteFloat | None = None
    fill: FillMethod = "linear"
    max_gap: Annotated[int, Field(ge=0)] | None = None


#: The most points one ``series_result`` carries.
MAX_SERIES_LIMIT: Final = 100_000


class Series(_Message):
    """Asks for one page of a sensor's stored readings, gaps filled, in seq order.

    A page holds the points with ``seq > after`` (all, when ``after`` is null), observed
    and filled, at most ``limit`` of them; ``series_result.next`` is the ``after`` of the
    next page. A gap is filled (``fill``, up to ``max_gap`` missing seqs) between two
    observed readings whose values are both numbers, or both lists of numbers of one
    length; nothing is invented before the first or after the last reading.
    """

    type: Literal["series"] = "series"
    sensor: SensorName
    since: FiniteFloat | None = None
    fill: FillMethod = "none"
    max_gap: Annotated[int, Field(ge=0)] | None = None
    after: Seq | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_SERIES_LIMIT)] = 10_000


class Bye(_Message):
    """Ends a conversation; the server answers after everything sent before it."""

    type: Literal["bye"] = "bye"


# --- replies: server to client ----------------------------------------------------------


class Welcome(_Message):
    """The server's answer to ``hello``: what it speaks and what it accepts."""

    type: Literal["welcome"] = "welcome"
    version: int = PROTOCOL_VERSION
    server: str
    max_frame: int
    limits: dict[str, int | float] = Field(default_factory=dict)


class CalcError(_Message):
    """Why the expression at ``index`` of a job has no value (``codes.ExpressionCode``)."""

    index: int
    code: str
    message: str


class CalcResult(_Message):
    """The answer to ``calc``: ``results[i]`` is ``None`` exactly when an error names ``i``."""

    type: Literal["calc_result"] = "calc_result"
    id: JobId
    results: list[Number | None]
    errors: list[CalcError] = Field(default_factory=list)


class Ack(_Message):
    """What was committed to storage.

    ``acked`` maps a sensor to inclusive ``[first, last]`` runs of consecutive seqs, so a
    batch of 1,000 readings from one sensor is acked in a few bytes. A duplicate is acked
    again (it is stored) and also counted in ``duplicates``.
    """

    type: Literal["ack"] = "ack"
    acked: dict[str, list[tuple[int, int]]]
    duplicates: int = 0


class StatsResult(_Message):
    """Counters of the running server, by name (``codes.Stat``)."""

    type: Literal["stats_result"] = "stats_result"
    counters: dict[str, int | float]


class ReportResult(_Message):
    """The analytics report, the same JSON that ``forkwire report`` writes."""

    type: Literal["report_result"] = "report_result"
    report: AnalyticsReport


class SeriesResult(_Message):
    """One page of a sensor's points, as parallel arrays of equal length.

    ``value`` is the stored value (or the filled estimate), ``filled`` marks the points
    the fill method added, and ``received_at`` is the UNIX time of the commit that stored
    the reading (null for a filled point). ``next`` is the ``after`` of the next page, or
    null when this page is the last.
    """

    type: Literal["series_result"] = "series_result"
    sensor: SensorName
    seq: list[int]
    ts: list[float]
    value: list[Value]
    filled: list[bool]
    received_at: list[float | None]
    next: int | None = None

    @model_validator(mode="after")
    def _same_length(self) -> SeriesResult:
        sizes = {len(self.ts), len(self.value), len(self.filled), len(self.received_at)}
        if sizes != {len(self.seq)}:
            raise ValueError("seq, ts, value, filled and received_at must be equally long")
        return self


class Error(_Message):
    """The server's answer to bad input (``codes.ErrorCode``); ``ref`` names the request."""

    type: Literal["error"] = "error"
    code: str
    message: str
    ref: int | str | None = None


Request: TypeAlias = Annotated[
    Hello | Calc | ReadingMsg | ReadingsMsg | Stats | Report | Series | Bye,
    Field(discriminator="type"),
]
Reply: TypeAlias = Annotated[
    Welcome | CalcResult | Ack | StatsResult | ReportResult | SeriesResult | Bye | Error,
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
)

_REQUESTS: Final[TypeAdapter[Request]] = TypeAdapter(Request)
_REPLIES: Final[TypeAdapter[Reply]] = TypeAdapter(Reply)
REQUEST_TYPES: Final = frozenset(
    ("hello", "calc", "reading", "readings", "stats", "report", "series", "bye")
)
REPLY_TYPES: Final = frozenset(
    ("welcome", "calc_result", "ack", "stats_result", "report_result", "series_result", "bye")
) | {"error"}

_TAG_ERRORS: Final = frozenset({"union_tag_invalid", "union_tag_not_found"})


def encode_message(message: _Message) -> bytes:
    """Serialize a message to its JSON payload (without the frame header)."""
    return message.model_dump_json().encode()


def pack(message: _Message) -> bytes:
    """Encode a message and frame it, ready for a stream or a datagram."""
    return encode_frame(message.model_dump_json().encode())


def decode_request(payload: bytes) -> Request:
    """Parse and validate one payload a client sent.

    Raises:
        BadJSON: the payload is not UTF-8 JSON, or not an object.
        UnknownType: no ``type``, or one no message of this version has.
        UnexpectedMessage: a message only a server sends.
        BadMessage: a known request whose fields are wrong.
    """
    try:
        return _REQUESTS.validate_json(payload)
    except ValidationError as exc:
        raise _classify(exc, payload, REPLY_TYPES - REQUEST_TYPES, "a client") from None


def decode_reply(payload: bytes) -> Reply:
    """Parse and validate one payload a server sent; raises as :func:`decode_request`."""
    try:
        return _REPLIES.validate_json(payload)
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
