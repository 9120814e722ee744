"""Message models: exact round trips, strict validation, and errors mapped to stable codes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forkwire.protocol.errors import (
    BadJSON,
    BadMessage,
    ProtocolError,
    UnexpectedMessage,
    UnknownType,
)
from forkwire.protocol.framing import FrameDecoder, encode_frame
from forkwire.protocol.messages import (
    REPLY_TYPES,
    REQUEST_TYPES,
    Ack,
    Bye,
    Calc,
    CalcError,
    CalcResult,
    Error,
    Hello,
    Ping,
    Pong,
    ReadingMsg,
    ReadingsMsg,
    Report,
    ReportResult,
    Series,
    SeriesResult,
    Stats,
    StatsResult,
    Welcome,
    decode_reply,
    decode_request,
    encode_message,
    pack,
)
from forkwire.protocol.messages import Reading as ReadingItem

EVERY_MESSAGE: list[Any] = [
    Hello(),
    Hello(version=1, client="calc/0.1", token="s3cret"),
    Welcome(server="forkwire/0.1", max_frame=1024, limits={"max_length": 4096, "timeout": 2.5}),
    Calc(id=0, ops=[]),
    Calc(id=2**63 - 1, ops=["1 + 2", "", "é ∑ \u2028 \x00"]),
    CalcResult(id=7, results=[]),
    CalcResult(
        id=7,
        results=[3, 0.25, None, -1],
        errors=[CalcError(index=2, code="division_by_zero", message="division by zero")],
    ),
    ReadingMsg(sensor="temp-1", seq=0, ts=1.5, value=21),
    ReadingMsg(sensor="temp-1", seq=0, ts=1.5, value=21, producer="9f86d081884c7d659a2feaa0"),
    ReadingMsg(sensor="a.b_C", seq=5, ts=0.0, value=-3.25, ack=False),
    ReadingMsg(sensor="v", seq=1, ts=2.0, value=[1.0, -2.5]),
    ReadingMsg(sensor="r", seq=2, ts=3.0, value={"k": [1, "x", None, True], "n": {"m": 1.5}}),
    ReadingsMsg(
        items=[
            ReadingItem(sensor="a", seq=1, ts=1.0, value=1),
            ReadingItem(sensor="b", seq=2, ts=2.0, value=[0.5]),
        ],
        ack=False,
    ),
    ReadingsMsg(producer="p-1", items=[ReadingItem(sensor="a", seq=1, ts=1.0, value=1)]),
    Ack(acked={}),
    Ack(acked={"a": [(1, 3), (5, 5)], "b": [(0, 0)]}, duplicates=2),
    Stats(),
    Ping(),
    Ping(id=5),
    Pong(id=5),
    StatsResult(counters={"jobs": 3, "load": 0.5}),
    Report(),
    Report(sensors=["a", "b"], since=10.5, fill="previous", max_gap=3),
    ReportResult(report={"generated_at": 1.5, "sensors": {}}),
    ReportResult(
        report={
            "generated_at": 2.0,
            "sensors": {
                "a": {
                    "kind": "scalar",
                    "count": 2,
                    "expected": 3,
                    "lost": 1,
                    "loss_pct": 33.3,
                    "filled": 1,
                    "rate_hz": 0.5,
                    "first_seq": 0,
                    "last_seq": 2,
                    "first_ts": 1.0,
                    "last_ts": 5.0,
                    "producers": [
                        {
                            "producer": "",
                            "count": 2,
                            "expected": 3,
                            "lost": 1,
                            "first_seq": 0,
                            "last_seq": 2,
                            "first_ts": 1.0,
                            "last_ts": 5.0,
                        }
                    ],
                    "dropouts": [
                        {
                            "producer": "",
                            "first_seq": 1,
                            "last_seq": 1,
                            "count": 1,
                            "start_ts": 1.0,
                            "end_ts": 5.0,
                        }
                    ],
                    "stats": {
                        "min": 1.0,
                        "max": 2.0,
                        "mean": 1.5,
                        "std": 0.5,
                        "p50": 1.5,
                        "p95": 1.95,
                        "p99": 1.99,
                    },
                }
            },
        }
    ),
    Series(sensor="a"),
    Series(sensor="a", producer="f00d", since=1.0, fill="linear", max_gap=5, after=9, limit=100),
    SeriesResult(
        sensor="a",
        seq=[1, 2],
        ts=[1.0, 2.0],
        value=[3, 4.5],
        filled=[False, True],
        received_at=[9.5, None],
        next=2,
    ),
    Bye(),
    Error(code="bad_json", message="nope"),
    Error(code="bad_message", message="x", ref=7),
    Error(code="bad_message", message="x", ref="abc"),
    Error(code="conflict", message="x", keys={"s": [(0, 2), (7, 7)]}),
]


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def decode_message(payload: bytes) -> Any:
    """Decode a payload of either direction: as a request, else as a reply."""
    try:
        return decode_request(payload)
    except UnexpectedMessage:
        return decode_reply(payload)


def error_code(payload: bytes) -> str | None:
    """Decode ``payload``; return the code of the ProtocolError it raised, if any.

    Any other exception propagates and fails the calling test.
    """
    try:
        decode_message(payload)
    except ProtocolError as exc:
        return exc.code
    return None


def reading(**fields: object) -> bytes:
    base: dict[str, object] = {"type": "reading", "sensor": "s1", "seq": 0, "ts": 1.0, "value": 1}
    base.update(fields)
    return raw(base)


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_type_round_trips(message: Any) -> None:
    """encode_message then decode_message gives back an equal message of the same type."""
    decoded = decode_message(encode_message(message))
    assert type(decoded) is type(message)
    assert decoded == message


def test_every_message_type_is_covered() -> None:
    """The round-trip table names every message of the union."""
    tags = {m.type for m in EVERY_MESSAGE}
    assert tags == {
        "hello",
        "welcome",
        "calc",
        "calc_result",
        "reading",
        "readings",
        "ack",
        "stats",
        "stats_result",
        "report",
        "report_result",
        "series",
        "series_result",
        "bye",
        "ping",
        "pong",
        "error",
    }
    assert tags == REQUEST_TYPES | REPLY_TYPES


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_each_direction_refuses_the_other_sides_messages(message: Any) -> None:
    """A request decoded as a reply, or a reply as a request, is unexpected_message."""
    payload = encode_message(message)
    for decode, own in ((decode_request, REQUEST_TYPES), (decode_reply, REPLY_TYPES)):
        if message.type in own:
            assert decode(payload) == message
        else:
            with pytest.raises(UnexpectedMessage, match=f"does not send '{message.type}'"):
                decode(payload)


def test_series_result_columns_must_have_one_length() -> None:
    """A series page whose arrays differ in length is a bad message."""
    payload = raw(
        {
            "type": "series_result",
            "sensor": "a",
            "seq": [1, 2],
            "ts": [1.0],
            "value": [1, 2],
            "filled": [False, False],
            "received_at": [1.0, 2.0],
        }
    )
    with pytest.raises(BadMessage, match="equally long"):
        decode_reply(payload)


def test_pack_frames_the_encoded_message() -> None:
    """pack() is encode_frame(encode_message()), and a decoder gets the message back."""
    message = Calc(id=3, ops=["1 + 1"])
    assert pack(message) == encode_frame(encode_message(message))
    (payload,) = FrameDecoder().feed(pack(message))
    assert decode_message(payload) == message


def test_calc_result_numbers_survive_exactly() -> None:
    """Big ints, -0.0 and 0.1 + 0.2 come back from a CalcResult round trip with equal repr."""
    values = [10**4000, -(10**4000), -0.0, 0.1 + 0.2, 5e-324, 1.7976931348623157e308, 3, None]
    decoded = decode_message(encode_message(CalcResult(id=1, results=values)))
    assert isinstance(decoded, CalcResult)
    assert [repr(v) for v in decoded.results] == [repr(v) for v in values]
    assert [type(v) for v in decoded.results] == [type(v) for v in values]


@pytest.mark.parametrize(
    "payload",
    [b"", b"nope", b"{", b'{"type": "calc",}', b"\xff\xfe\x00", b'\xef\xbb\xbf{"type":"bye"}'],
)
def test_not_json_is_bad_json(payload: bytes) -> None:
    """A payload that is not UTF-8 JSON raises BadJSON with code bad_json."""
    with pytest.raises(BadJSON) as info:
        decode_message(payload)
    assert info.value.code == "bad_json"


@pytest.mark.parametrize("payload", [b"[1]", b"5", b'"calc"', b"null", b"true", b"[]"])
def test_json_that_is_not_an_object_is_bad_json(payload: bytes) -> None:
    """Valid JSON that is not an object raises BadJSON."""
    with pytest.raises(BadJSON) as info:
        decode_message(payload)
    assert info.value.code == "bad_json"


@pytest.mark.parametrize(
    "payload",
    [b"{}", raw({"id": 1, "ops": []}), raw({"type": "zzz"}), raw({"type": 5}), raw({"type": None})],
)
def test_missing_or_unknown_type_is_unknown_type(payload: bytes) -> None:
    """An object without a known 'type' raises UnknownType with code unknown_type."""
    with pytest.raises(UnknownType) as info:
        decode_message(payload)
    assert info.value.code == "unknown_type"


@pytest.mark.parametrize(
    ("obj", "ref"),
    [
        ({"type": "calc", "id": 7, "ops": [5]}, 7),
        ({"type": "calc", "id": 7, "ops": "1 + 1"}, 7),
        ({"type": "calc", "id": 7, "ops": [], "extra": 1}, 7),
        ({"type": "calc", "id": "5", "ops": []}, "5"),
        ({"type": "calc", "id": -1, "ops": []}, -1),
        ({"type": "calc", "id": 2**63, "ops": []}, 2**63),
        ({"type": "calc", "id": True, "ops": []}, None),
        ({"type": "calc", "id": 1.0, "ops": []}, None),
        ({"type": "calc", "ops": []}, None),
        ({"type": "error", "code": 5, "message": "m", "id": "abc"}, "abc"),
        ({"type": "hello", "version": "1"}, None),
        ({"type": "bye", "why": "done"}, None),
    ],
)
def test_invalid_fields_are_bad_message_with_ref(obj: dict[str, object], ref: object) -> None:
    """Wrong field types or extra fields raise BadMessage, with ref taken from an 'id' field."""
    with pytest.raises(BadMessage) as info:
        decode_message(raw(obj))
    assert info.value.code == "bad_message"
    assert info.value.ref == ref
    assert type(info.value.ref) is type(ref)


def test_bad_message_names_the_type_and_field() -> None:
    """A BadMessage message names the message type and the offending field."""
    with pytest.raises(BadMessage, match=r"^calc: .*ops\.1"):
        decode_message(raw({"type": "calc", "id": 1, "ops": ["ok", 5]}))


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "calc", "id": "5", "ops": []},
        {"type": "calc", "id": 5, "ops": [1]},
        {"type": "welcome", "server": 1, "max_frame": 10},
        {"type": "welcome", "server": "s", "max_frame": "10"},
        {"type": "hello", "client": 3},
        {"type": "error", "code": "x", "message": 1.5},
        {"type": "calc_result", "id": 1, "results": ["1"]},
        {"type": "calc_result", "id": 1, "results": [True]},
        {"type": "reading", "sensor": "s", "seq": "1", "ts": 1.0, "value": 1},
        {"type": "reading", "sensor": "s", "seq": 1, "ts": "1.0", "value": 1},
        {"type": "reading", "sensor": "s", "seq": 1, "ts": 1.0, "value": 1, "ack": "yes"},
        {"type": "reading", "sensor": "s", "seq": 1, "ts": 1.0, "value": 1, "ack": 1},
    ],
)
def test_no_coercion_between_strings_numbers_and_bools(obj: dict[str, object]) -> None:
    """Strict models: "5" is not an int, a number is not a string, a bool is neither."""
    with pytest.raises(BadMessage):
        decode_message(raw(obj))


@pytest.mark.parametrize("sensor", ["a", "A-z_0.9", "x" * 64])
def test_reading_accepts_portable_sensor_names(sensor: str) -> None:
    """Sensor names of 1..64 characters from [A-Za-z0-9_.-] are accepted."""
    decoded = decode_message(reading(sensor=sensor))
    assert isinstance(decoded, ReadingMsg)
    assert decoded.sensor == sensor


@pytest.mark.parametrize(
    "sensor", ["", "x" * 65, "a b", "a/b", "abc\n", "\nabc", "é", "a\x00", "../etc"]
)
def test_reading_rejects_other_sensor_names(sensor: str) -> None:
    """Empty, overlong or non-portable sensor names (a trailing newline too) are bad_message."""
    with pytest.raises(BadMessage):
        decode_message(reading(sensor=sensor))


@pytest.mark.parametrize("seq", [-1, 2**63, 1.0, True, None])
def test_reading_rejects_bad_seq(seq: object) -> None:
    """seq is an int in 0..2**63-1; negatives, floats, bools and null are bad_message."""
    with pytest.raises(BadMessage):
        decode_message(reading(seq=seq))


def test_reading_accepts_seq_bounds() -> None:
    """seq 0 and 2**63-1 are valid."""
    for seq in (0, 2**63 - 1):
        decoded = decode_message(reading(seq=seq))
        assert isinstance(decoded, ReadingMsg)
        assert decoded.seq == seq


@pytest.mark.parametrize("ts", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_reading_rejects_non_finite_ts(ts: bytes) -> None:
    """ts must be a finite number: NaN and infinities (spelled or overflowing) are bad_message."""
    payload = b'{"type":"reading","sensor":"s","seq":0,"ts":' + ts + b',"value":1}'
    with pytest.raises(BadMessage):
        decode_message(payload)


def test_reading_rejects_non_finite_ts_in_python() -> None:
    """Building a reading with a non-finite ts in Python fails validation too."""
    with pytest.raises(ValueError, match="finite"):
        ReadingItem(sensor="s", seq=0, ts=math.inf, value=1)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (21, int),
        (-3.5, float),
        ([1.5, -2.0], list),
        ([], list),
        ({"a": 1, "b": [None, "x", 2.5]}, dict),
    ],
)
def test_reading_value_kinds(value: object, kind: type) -> None:
    """A reading's value is an int, a float, a list of floats, or a JSON object."""
    decoded = decode_message(reading(value=value))
    assert isinstance(decoded, ReadingMsg)
    assert type(decoded.value) is kind
    assert decoded.value == value


@pytest.mark.parametrize("value", [True, False, "21", None, [True], ["1.5"], [[1.0]]])
def test_reading_rejects_other_values(value: object) -> None:
    """Bools, strings, null and lists of non-numbers are not reading values."""
    with pytest.raises(BadMessage):
        decode_message(reading(value=value))


def test_reading_rejects_bool_value_in_python() -> None:
    """A bool is not a value even when the model is built in Python."""
    with pytest.raises(ValueError, match="value"):
        ReadingItem(sensor="s", seq=0, ts=1.0, value=True)


def test_readings_batch_must_not_be_empty() -> None:
    """A readings message carries at least one reading."""
    with pytest.raises(BadMessage):
        decode_message(raw({"type": "readings", "items": []}))


def test_messages_are_frozen() -> None:
    """Models are immutable once built."""
    message = Calc(id=1, ops=["1"])
    with pytest.raises(ValueError, match="frozen"):
        message.id = 2  # type: ignore[misc]


@settings(max_examples=200)
@given(job_id=st.integers(min_value=0, max_value=2**63 - 1), ops=st.lists(st.text(), max_size=20))
def test_any_calc_round_trips(job_id: int, ops: list[str]) -> None:
    """Any calc (ids up to 2**63-1, any unicode ops) survives encode then decode."""
    message = Calc(id=job_id, ops=ops)
    assert decode_message(encode_message(message)) == message


@settings(max_examples=300)
@given(payload=st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(payload: bytes) -> None:
    """Random bytes either decode or raise a ProtocolError subclass, nothing else."""
    assert error_code(payload) in {None, "bad_json", "unknown_type", "bad_message"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
TYPES = st.sampled_from([*sorted({m.type for m in EVERY_MESSAGE}), "nope"])


@settings(max_examples=150)
@given(
    fields=st.dictionaries(
        st.sampled_from(["id", "ops", "sensor", "seq", "ts", "value", "items", "code", "x"]), JSON
    ),
    tag=TYPES,
)
def test_random_json_objects_raise_only_protocol_errors(fields: dict[str, Any], tag: str) -> None:
    """Random JSON objects with a plausible 'type' either decode or raise a ProtocolError."""
    payload = json.dumps({"type": tag, **fields}).encode()
    assert error_code(payload) in {None, "bad_json", "unknown_type", "bad_message"}
