"""Numbers on the wire, as PROTOCOL.md describes them to implementers in other languages."""

from __future__ import annotations

import json
import math
import re

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from forkwire.protocol import CalcResult, decode_reply, encode_message

FINITE = st.floats(allow_nan=False, allow_infinity=False)


def python_repr(x: float) -> str:
    """PROTOCOL.md's recipe for printing a double as Python's repr does, without repr.

    The shortest round-trip digits come from numpy's Dragon4 (any shortest algorithm
    does: Ryu, Grisu, JavaScript's toExponential(), Go's FormatFloat(x, 'e', -1, 64));
    the layout is Python's: positional when the decimal exponent is in [-4, 16), else
    scientific with a sign and at least two exponent digits; a whole number gets ".0".
    """
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    text = np.format_float_scientific(abs(x), unique=True, exp_digits=1)
    mantissa, exponent_text = text.split("e")
    digits = mantissa.replace(".", "")
    exponent = int(exponent_text)
    digits = digits.rstrip("0") or "0"
    sign = "-" if x < 0 else ""
    if -4 <= exponent < 16:
        point = exponent + 1  # digits before the decimal point
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return f"{sign}{digits}{'0' * (point - len(digits))}.0"
        return f"{sign}{digits[:point]}.{digits[point:]}"
    fraction = f".{digits[1:]}" if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{fraction}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


@given(FINITE)
@example(6.42463321184936e-05)
@example(1e16)
@example(9999999999999998.0)
@example(0.0001)
@example(0.00001)
@example(5e-324)
@example(1.7976931348623157e308)
@example(-0.0)
@example(0.1 + 0.2)
def test_the_documented_recipe_prints_what_python_prints(x: float) -> None:
    """Shortest digits plus Python's layout give exactly repr(x)."""
    assert python_repr(x) == repr(x)


NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


@given(st.lists(st.one_of(FINITE, st.integers()), max_size=20))
@example([5.0, 5, 10**4000, -(10**40), 1e16, 6.42463321184936e-05])
def test_an_int_and_a_float_differ_in_their_json_text(values: list[int | float]) -> None:
    """On the wire a float always has '.', 'e' or 'E' in its text and an int never has;
    each text parses back to the same value, ints of any size included."""
    payload = encode_message(CalcResult(id=1, results=list(values)))
    texts = NUMBER.findall(payload.split(b'"results":', 1)[1])
    assert len(texts) == len(values)
    for text, value in zip(texts, values, strict=True):
        looks_float = any(c in text for c in b".eE")
        assert looks_float == isinstance(value, float)
        parsed = float(text) if looks_float else int(text)
        assert parsed == value
        if isinstance(value, float):
            assert math.copysign(1, parsed) == math.copysign(1, value)  # -0.0 keeps its sign
    decoded = decode_reply(payload)
    assert isinstance(decoded, CalcResult)
    assert [repr(v) for v in decoded.results] == [repr(v) for v in values]


def test_a_plain_json_parser_loses_the_int_float_distinction() -> None:
    """Why the text matters: JSON.parse-style parsing maps 5 and 5.0 to one number."""
    payload = encode_message(CalcResult(id=1, results=[5, 5.0]))
    as_doubles = json.loads(payload, parse_int=float)["results"]
    assert as_doubles[0] == as_doubles[1]
    assert [repr(v) for v in decode_reply(payload).results] == ["5", "5.0"]  # type: ignore[union-attr]
