"""The whole arithmetic grammar: ``// % **``, every literal form, comments and line
joining, each with Python's value, type and error, and the one bound of our own (no
integer over 4,300 digits, refused before it is computed)."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

import pytest
from fwtest import outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from forkwire.server.grammar import MAX_INT_BITS
from forkwire.server.interpreter import DEFAULT_LIMITS, ExpressionError, Limits, evaluate

ROOMY = Limits(max_length=1_000_000, max_depth=100, max_digits=100)

_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def reference(text: str) -> tuple[object, ...]:
    """Python's answer, computed from Python's own parse of ``text`` with Python's
    operators, plus the documented bound; as (type, repr) or the error code."""
    try:
        # eval() strips leading spaces and tabs before it compiles; ast.parse does not.
        tree = ast.parse(text.lstrip(" \t"), mode="eval")
    except SyntaxError:
        return ("syntax",)
    try:
        value = _walk(tree.body)
    except ZeroDivisionError:
        return ("division_by_zero",)
    except OverflowError:
        return ("overflow",)
    except _OutsideTheGrammar:
        return ("syntax",)
    except TypeError:  # // or % of a complex
        return ("complex",)
    if isinstance(value, complex):
        return ("complex",)
    if isinstance(value, float) and not math.isfinite(value):
        return ("overflow",)
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        return ("overflow",)
    return (type(value), repr(value))


class _OutsideTheGrammar(Exception):
    pass


def _walk(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _walk(node.operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _walk(node.left), _walk(node.right)  # left first, as CPython does
        if type(left) is int and type(right) is int and _over_the_bound(node.op, left, right):
            raise OverflowError("the documented bound")
        return _OPERATORS[type(node.op)](left, right)
    raise _OutsideTheGrammar(ast.dump(node))


def _over_the_bound(op: ast.operator, left: int, right: int) -> bool:
    """The documented rule: a ** or * whose int result would exceed 4,300 digits."""
    if isinstance(op, ast.Pow):
        return right > 0 and abs(left) > 1 and right * math.log2(abs(left)) > MAX_INT_BITS + 1
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length() - 1 > MAX_INT_BITS
    return False


def ours(text: str, limits: Limits = ROOMY) -> tuple[object, ...]:
    return outcome(text, limits)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("-7 % 3", 2),
        ("7 % -3", -2),
        ("7.5 % -2", -0.5),
        ("-7.5 // 2", -4.0),
        ("2 ** 100", 2**100),
        ("10 ** -1", 0.1),
        ("2 ** -1", 0.5),
        ("-2 ** 2", -4),
        ("(-2) ** 2", 4),
        ("2 ** 3 ** 2", 512),
        ("2 ** -1 ** 2", 0.5),
        ("-2 ** -2", -0.25),
        ("2 * -3 ** 2", -18),
        ("0 ** 0", 1),
        ("0.0 ** 0", 1.0),
        ("(-1) ** 10 ** 99", 1),
        ("1e5", 100000.0),
        ("1.5E-3", 0.0015),
        ("1e+5", 100000.0),
        ("1.e5", 100000.0),
        ("0e0", 0.0),
        ("1_000", 1000),
        ("1_0.0_1e1_0", 100100000000.0),
        ("0x10", 16),
        ("0XfF", 255),
        ("0x_10", 16),
        ("0o17", 15),
        ("0b101", 5),
        ("0_0", 0),
        ("1 + 1  # note", 2),
        ("(1 +\n 2)", 3),
        ("(1 +\r 2)", 3),
        ("(1\r\n+2)", 3),
        ("(1 # a comment\n + 2)", 3),
        ("1 + \\\n 2", 3),
        ("1 +\\\r\n2", 3),
        ("1 + 2\n", 3),
        ("1 + 2\r", 3),
        ("1 + 2 # done\r\n", 3),
        ("\n1 + 2\n\n# trailing comment\n", 3),
        ("1e-400", 0.0),
        ("10 ** -400", 0.0),
        ("1+2", 3),
        ("2**10//3%7", 5),
    ],
)
def test_python_arithmetic_evaluates_as_python(text: str, expected: float) -> None:
    """Each of these is a number in Python; forkwire gives the same value and type."""
    value = evaluate(text)
    assert (type(value), repr(value)) == (type(expected), repr(expected))
    assert ours(text, DEFAULT_LIMITS) == reference(text)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("0 ** -1", "division_by_zero"),
        ("0.0 ** -1", "division_by_zero"),
        ("10 % 0", "division_by_zero"),
        ("10.0 % 0", "division_by_zero"),
        ("10 // 0.0", "division_by_zero"),
        ("3 % -0.0", "division_by_zero"),
        ("1e400", "overflow"),
        ("1E400 * 0", "overflow"),
        ("2.0 ** 10000", "overflow"),
        ("(-8) ** 0.5", "complex"),
        ("(-2) ** 2.5", "complex"),
        ("(-8) ** (1 / 3)", "complex"),
        ("(-1) ** 0.5 // 1", "complex"),
        ("(-1) ** 0.5 * 0 + 1", "complex"),
        ("(-1) ** 0.5 + 0 ** -1", "division_by_zero"),
        ("(-1) ** 0.5 / 0", "division_by_zero"),
        ("1 / 0 ** 2 +", "syntax"),
        ("2 ** 3 **", "syntax"),
        ("** 2", "syntax"),
        ("2 // / 3", "syntax"),
    ],
)
def test_python_errors_map_to_codes(text: str, code: str) -> None:
    """Python's errors and its complex results map to codes; syntax errors win."""
    assert ours(text, DEFAULT_LIMITS) == (code,) == reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "9 ** 9 ** 9",
        "2 ** 99999999999999999999",
        "10 ** 4300",
        "(10 ** 3000) * (10 ** 3000)",
        "(2 ** 14000) ** 2",
        "7 ** 7 ** 7 ** 7",
    ],
)
def test_an_integer_over_the_digit_limit_is_refused_before_it_is_computed(text: str) -> None:
    """No integer in a computation may exceed 4,300 digits: a ** or * that would is an
    overflow, decided from the operands' sizes (these would take Python minutes, or all
    the memory there is, to compute)."""
    assert ours(text, DEFAULT_LIMITS) == ("overflow",)


def test_the_bound_is_python_printable_digits() -> None:
    """Just under the bound is computed exactly; the final check still applies."""
    assert evaluate("10 ** 4299") == 10**4299
    assert ours("10 ** 4299 * 10", DEFAULT_LIMITS) == ("overflow",)
    assert evaluate("(10 ** 2000 * 10 ** 2000) // 10 ** 3999") == 10


def test_literal_digit_limit_covers_every_form() -> None:
    """max_digits bounds hex, underscore and exponent literals too (too_long)."""
    tight = Limits(max_digits=5)
    for text in ("0x123456", "1_234_567", "1.23456e1", "123456"):
        with pytest.raises(ExpressionError) as info:
            evaluate(text, tight)
        assert info.value.code == "too_long", text
    assert evaluate("0x12345", tight) == 0x12345


# --- the whole grammar against Python -----------------------------------------------------

DIGITS = st.integers(0, 999)
INTS = st.one_of(
    DIGITS.map(str),
    DIGITS.map(lambda n: f"{n:_}"),
    DIGITS.map(hex),
    DIGITS.map(oct),
    DIGITS.map(bin),
    st.integers(1000, 10**12).map(lambda n: f"{n:_}"),
)
FLOATS = st.one_of(
    st.floats(0, 1e6, allow_nan=False).map(repr),
    st.tuples(st.integers(0, 99), st.integers(-30, 30)).map(lambda p: f"{p[0]}e{p[1]}"),
    st.sampled_from([".5", "5.", "1.5E-3", "0.0", "2.5", "1_0.2_5"]),
)
SMALL_EXPONENTS = st.sampled_from(["0", "1", "2", "3", "-1", "-2", "0.5", "2.0", "(-1)"])
BLANK = st.sampled_from(["", " ", "  ", "\t", "\f"])
BINARY = st.sampled_from(["+", "-", "*", "/", "//", "%"])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> str:
    parts = [draw(factors(depth))]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(BINARY), draw(factors(depth))]
    return draw(BLANK).join(parts)


@st.composite
def factors(draw: st.DrawFn, depth: int) -> str:
    prefix = "".join(draw(st.lists(st.sampled_from(["-", "+", "- "]), max_size=2)))
    if depth < 4 and draw(st.integers(0, 3)) == 0:
        inside = draw(expressions(depth + 1))
        joiner = draw(st.sampled_from(["", " ", "\n", "\r\n", " # note\n"]))
        atom = f"({joiner}{inside}{joiner})"
    else:
        atom = draw(st.one_of(INTS, FLOATS))
    if draw(st.integers(0, 4)) == 0:
        # ** binds to the right, and its exponent is a factor (it may carry a sign).
        atom += draw(BLANK) + "**" + draw(BLANK) + draw(SMALL_EXPONENTS)
        if draw(st.booleans()):
            atom += "**" + draw(st.sampled_from(["0", "1", "2"]))
    return prefix + atom


@settings(max_examples=400, deadline=None)
@given(
    text=expressions(),
    tail=st.sampled_from(["", "\n", "\r", "  # done", "\\\n", " \n\n"]),
)
def test_generated_expressions_match_python(text: str, tail: str) -> None:
    """Over generated expressions of the whole grammar (every literal form, every
    operator, signs, nesting, comments and line joining), forkwire's value, type and repr,
    or its error code, are Python's."""
    line = text + tail
    assert ours(line) == reference(line), line
