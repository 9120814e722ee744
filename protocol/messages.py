"""Messages of wire protocol v1.

Every payload is one JSON object whose ``type`` picks the model. Models are frozen and
strict: a string is never coerced into a number or the other way round, and unknown
fields are rejected, so a typo in a client shows up as a ``bad_message`` at once.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from forkwire.protocol.errors import BadJSON, BadMessage, ProtocolError, UnknownType
from forkwire.protocol.framing import encode_frame

PROTOCOL_VERSION: Final = 1

#: A sensor name is used as a file name and a database key by the consumers, so it keeps
#: to a portable alphabet.
SENSOR_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"

JobId: TypeAlias = Annotated[int, Field(ge=0, lt=2**63)]
SensorName: TypeAlias = Annotated[str, Field(pattern=SENSOR_PATTERN)]
FiniteFloat: TypeAlias = Annotated[float, Field(allow_inf_nan=False)]
#: A reading's value: a scalar, a vector, or a record (a JSON object).
Value: TypeAlias = int | FiniteFloat | list[FiniteFloat] | dict[str, JsonValue]
Number: TypeAlias = int | float


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Hello(_Message):
    """Opens a conversation; optional, a client that skips it speaks v1."""

    type: Literal["hello"] = "hello"
    version: int = PROTOCOL_VERSION
    client: str = Field(default="", max_length=200)
    token: str | None = None


class Welcome(_Message):
    """The server's answer to ``hello``: what it speaks and what it accepts."""

    type: Literal["welcome"] = "welcome"
    version: int = PROTOCOL_VERSION
    server: str
    max_frame: int
    limits: dict[str, int | float] = Field(default_factory=dict)


class Calc(_Message):
    """One compute job: the expressions are answered together, in this order."""

    type: Literal["calc"] = "calc"
    id: JobId
    ops: list[str]


class CalcError(_Message):
    """Why the expression at ``index`` of a job has no value."""

    index: int
    code: str
    message: str


class CalcResult(_Message):
    """The answer to ``calc``: ``results[i]`` is ``None`` exactly when an error names ``i``."""

    type: Literal["calc_result"] = "calc_result"
    id: JobId
    results: list[Number | None]
    errors: list[CalcError] = Field(default_factory=list)


class Reading(_Message):
    """One measurement; ``(sensor, seq)`` is its idempotency key."""

    sensor: SensorName
    seq: Annotated[int, Field(ge=0, lt=2**63)]
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


class Ack(_Message):
    """What was committed to storage.

    ``acked`` maps a sensor to inclusive ``[first, last]`` runs of consecutive seqs, so a
    batch of 1,000 readings from one sensor is acked in a few bytes. A duplicate is acked
    again (it is stored) and also counted in ``duplicates``.
    """

    type: Literal["ack"] = "ack"
    acked: dict[str, list[tuple[int, int]]]
    duplicates: int = 0


class Stats(_Message):
    """Asks for the server's counters."""

    type: Literal["stats"] = "stats"


class StatsResult(_Message):
    """Counters of the running server, by name."""

    type: Literal["stats_result"] = "stats_result"
    counters: dict[str, int | float]


class Report(_Message):
    """Asks for the analytics report of the stored streams."""

    type: Literal["report"] = "report"
    sensors: list[SensorName] | None = None
    since: FiniteFloat | None = None


class ReportResult(_Message):
    """The analytics report, the same JSON that ``forkwire report`` writes."""

    type: Literal["report_result"] = "report_result"
    report: dict[str, JsonValue]


class Bye(_Message):
    """Ends a conversation; the server answers after everything sent before it."""

    type: Literal["bye"] = "bye"


class Error(_Message):
    """The server's answer to bad input; ``ref`` names the request when it is known."""

    type: Literal["error"] = "error"
    code: str
    message: str
    ref: int | str | None = None


Message: TypeAlias = Annotated[
    Hello
    | Welcome
    | Calc
    | CalcResult
    | ReadingMsg
    | ReadingsMsg
    | Ack
    | Stats
    | StatsResult
    | Report
    | ReportResult
    | Bye
    | Error,
    Field(discriminator="type"),
]

_ADAPTER: Final[TypeAdapter[Message]] = TypeAdapter(Message)

_TAG_ERRORS: Final = frozenset({"union_tag_invalid", "union_tag_not_found"})


def encode_message(message: _Message) -> bytes:
    """Serialize a message to its JSON payload (without the frame header)."""
    return message.model_dump_json().encode()


def pack(message: _Message) -> bytes:
    """Encode a message and frame it, ready for a stream or a datagram."""
    return encode_frame(message.model_dump_json().encode())


def decode_message(payload: bytes) -> Message:
    """Parse and validate one payload.

    Raises:
        BadJSON: the payload is not UTF-8 JSON.
        UnknownType: it is JSON, but not an object with a known ``type``.
        BadMessage: a known type whose fields are wrong.
    """
    try:
        return _ADAPTER.validate_json(payload)
    except ValidationError as exc:
        raise _classify(exc, payload) from None


def _classify(exc: ValidationError, payload: bytes) -> ProtocolError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return BadJSON(f"payload is not valid JSON: {first['msg']}")
    if not first["loc"]:
        if first["type"] in _TAG_ERRORS:
            return UnknownType(f"payload needs a known 'type': {first['msg']}")
        return BadJSON("payload must be a JSON object")
    shown = "; ".join(_describe(error) for error in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return BadMessage(f"{first['loc'][0]}: {shown}{more}", ref=_recover_ref(payload))


def _describe(error: Any) -> str:
    # The first loc item is the union tag ("calc"); the field path follows it.
    loc = ".".join(str(part) for part in error["loc"][1:]) or "payload"
    return f"{loc}: {error['msg']}"


def _recover_ref(payload: bytes) -> int | str | None:
    # Only on the error path: a second parse is cheap next to a bad frame's round trip.
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    ref = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(ref, int | str) and not isinstance(ref, bool):
        return ref
    return None
