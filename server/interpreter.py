"""The arithmetic interpreter: tokenizer, parser and evaluator in one pass.

Grammar (the subset of Python's expression grammar the product accepts)::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := ("+" | "-") factor | "(" expr ")" | NUMBER
    NUMBER := DIGITS | DIGITS "." DIGITS? | "." DIGITS        (ASCII digits only)

Semantics are Python's for the same text: ints stay ints, ``/`` is true division, ``*``
and ``/`` bind tighter than ``+`` and ``-``, and every binary operator is left-associative.
The evaluator applies Python's own operators to the operands in the order CPython's
compiled code would, so results are identical, value and type, down to the last bit of
a float. It never calls ``eval``, ``exec`` or ``compile``.

Why one pass instead of an AST: the real workload is 300,000 short lines, and building
and walking a tree costs more than the arithmetic. An operator-precedence loop with two
pending levels (the running sum and the running product) evaluates as it parses; a stack
saves both levels at each ``(``. Whitespace-separated input, which is nearly all of it,
is tokenized by ``str.split`` (C speed); anything else falls back to a regular
expression, which is also the reference for error positions.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

Number = int | float


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds that keep one hostile expression from costing more than microseconds.

    Attributes:
        max_length: characters per expression. 4,096 keeps every integer result under
            Python's 4,300-digit ``int`` to ``str`` limit, so any result can be printed.
        max_depth: nested parentheses. CPython's parser stops at 200; half of that is far
            beyond any real formula.
        max_digits: digits in one literal, which bounds the cost of each ``int()``.
    """

    max_length: int = 4096
    max_depth: int = 100
    max_digits: int = 100

    def __post_init__(self) -> None:
        for name in ("max_length", "max_depth", "max_digits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS: Final = Limits()

#: Python refuses to turn an int of more than 4,300 digits into text (CVE-2020-10735); a
#: result that large could not be written to the results file, so it is an overflow.
_MAX_RESULT_BITS: Final = int(4300 * math.log2(10))

# Operands of the real workload are 1..99; a dict hit skips int() for nearly all of them.
_SMALL_INTS: Final = {str(i): i for i in range(1000)}
_DECIMAL: Final = re.compile(r"[0-9]+\.[0-9]*|\.[0-9]+", re.ASCII)
# Python's tokenizer treats space, tab and form feed as blanks; anything else is a token.
_TOKEN: Final = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+|[^ \t\f]", re.ASCII)


_NEUTRAL_OPERATORS: Final = {"-": "+", "/": "*"}


class ExpressionError(Exception):
    """An expression has no value; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Unsplit(Exception):
    """The whitespace split met something it cannot classify; retry with the regex."""


class _Syntax(Exception):
    def __init__(self, index: int, message: str) -> None:
        self.index = index
        self.message = message


def evaluate(text: str, limits: Limits = DEFAULT_LIMITS) -> Number:
    """Evaluate one expression.

    Raises:
        ExpressionError: with code ``syntax``, ``too_long``, ``too_deep``,
            ``division_by_zero`` or ``overflow``.
    """
    if len(text) > limits.max_length:
        raise ExpressionError(
            "too_long", f"expression of {len(text)} characters exceeds {limits.max_length}"
        )
    try:
        if text.isprintable():
            try:
                return _checked(_run(text.split(), limits, strict=False))
            except _Unsplit:
                pass
        tokens = _TOKEN.findall(text)
        try:
            return _checked(_run(tokens, limits, strict=True))
        except _Syntax as exc:
            raise ExpressionError("syntax", _locate(text, exc)) from None
    except ZeroDivisionError:
        _check_form(text, limits)
        raise ExpressionError("division_by_zero", "division by zero") from None
    except OverflowError as exc:
        _check_form(text, limits)
        raise ExpressionError("overflow", str(exc)) from None


def evaluate_batch(
    ops: list[str], limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Number | None], list[tuple[int, str, str]]]:
    """Evaluate a job; return the values in order and ``(index, code, message)`` errors."""
    results: list[Number | None] = []
    errors: list[tuple[int, str, str]] = []
    append = results.append
    for index, text in enumerate(ops):
        try:
            append(evaluate(text, limits))
        except ExpressionError as exc:
            append(None)
            errors.append((index, exc.code, exc.message))
    return results, errors


def _check_form(text: str, limits: Limits) -> None:
    """Raise the syntax or limit error of ``text``, if it has one, before an arithmetic one.

    Python compiles a whole line before evaluating any of it, so ``1 / 0 +`` is a syntax
    error, not a division by zero; evaluating while parsing meets the division first. The
    check parses the line again with every valid literal replaced by ``1``, which keeps
    its shape; ``-`` becomes ``+`` and ``/`` becomes ``*`` (each pair is interchangeable in
    the grammar), so the check computes with positive ints only and cannot fail
    arithmetically.
    """
    neutral: list[str] = []
    for token in _TOKEN.findall(text):
        try:
            _literal(token, limits, strict=True)
        except (_Syntax, ExpressionError):
            neutral.append(_NEUTRAL_OPERATORS.get(token, token))
        else:
            neutral.append("1")
    try:
        _run(neutral, limits, strict=True)
    except _Syntax as exc:
        raise ExpressionError("syntax", _locate(text, exc)) from None


def _checked(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            # JSON has no inf or nan; Python would print one, we report why there is none.
            raise OverflowError(f"result is not a finite number ({value!r})")
    elif value.bit_length() > _MAX_RESULT_BITS:
        raise OverflowError("integer result has more than 4300 digits")
    return value


def _literal(token: str, limits: Limits, strict: bool) -> Number:
    if token.isdigit() and token.isascii():
        if len(token) > limits.max_digits:
            raise ExpressionError(
                "too_long", f"literal of {len(token)} digits exceeds {limits.max_digits}"
            )
        if token[0] == "0" and token.strip("0"):
            if not strict:
                raise _Unsplit
            raise _Syntax(-1, "leading zeros in decimal integer literals are not permitted")
        return int(token)
    if _DECIMAL.fullmatch(token):
        if len(token) - 1 > limits.max_digits:
            raise ExpressionError(
                "too_long", f"literal of {len(token) - 1} digits exceeds {limits.max_digits}"
            )
        return float(token)
    if not strict:
        raise _Unsplit
    raise _Syntax(-1, f"unexpected {token!r}")


def _run(tokens: list[str], limits: Limits, strict: bool) -> Number:
    # The state is a running sum `acc` (pending operator `addop`) and a running product
    # `term` (pending operator `mulop`). `+`/`-` folds the product into the sum; `(`
    # pushes both levels; `)` folds and pops. Python's evaluation order is preserved
    # because every fold happens exactly where CPython's bytecode would do the operation.
    acc: Number = 0
    term: Number = 0
    value: Number | None
    addop = mulop = ""
    neg = False
    stack: list[tuple[Number, str, Number, str, bool]] = []
    expect_operand = True
    # The table holds literals of up to 3 digits; a tighter max_digits must see them all.
    small = _SMALL_INTS if limits.max_digits >= 3 else {}
    # A plain iterator keeps `enumerate` off the hot path; `_position` recovers the index
    # from what is left of it when an error needs one.
    remaining = iter(tokens)
    for token in remaining:
        if expect_operand:
            value = small.get(token)
            if value is None:
                if token == "-":
                    neg = not neg
                    continue
                if token == "+":
                    continue
                if token == "(":
                    if len(stack) >= limits.max_depth:
                        raise ExpressionError(
                            "too_deep", f"more than {limits.max_depth} nested parentheses"
                        )
                    stack.append((acc, addop, term, mulop, neg))
                    addop = mulop = ""
                    neg = False
                    continue
                try:
                    value = _literal(token, limits, strict)
                except _Syntax as exc:
                    exc.index = _position(tokens, remaining)
                    raise
            expect_operand = False
        elif token == "*" or token == "/":
            mulop = token
            expect_operand = True
            continue
        elif token == "+" or token == "-":
            if not addop:
                acc = term
            elif addop == "+":
                acc = acc + term
            else:
                acc = acc - term
            addop = token
            mulop = ""
            expect_operand = True
            continue
        elif token == ")":
            if not stack:
                if not strict:
                    raise _Unsplit
                raise _Syntax(_position(tokens, remaining), "unmatched ')'")
            # The group's value is an operand of the level that opened it.
            if not addop:
                value = term
            elif addop == "+":
                value = acc + term
            else:
                value = acc - term
            acc, addop, term, mulop, neg = stack.pop()
        else:
            if not strict:
                raise _Unsplit
            raise _Syntax(_position(tokens, remaining), f"unexpected {token!r} after an operand")
        # An operand is complete (a literal or a closed group): apply the pending unary
        # minus, then the pending * or /.
        if neg:
            # Negation is an involution on ints and floats (signed zero included), so a
            # chain of unary minus reduces to its parity.
            value = -value
            neg = False
        if not mulop:
            term = value
        elif mulop == "*":
            term = term * value
        else:
            term = term / value
    if expect_operand or stack:
        if not strict:
            raise _Unsplit
        if expect_operand:
            raise _Syntax(len(tokens), "expression is incomplete")
        raise _Syntax(len(tokens), "'(' was never closed")
    if not addop:
        return term
    if addop == "+":
        return acc + term
    return acc - term


def _position(tokens: list[str], remaining: Iterator[str]) -> int:
    return len(tokens) - operator.length_hint(remaining) - 1


def _locate(text: str, error: _Syntax) -> str:
    # Only on the error path: find the column of the offending token for the message.
    positions = [match.start() for match in _TOKEN.finditer(text)]
    column = positions[error.index] + 1 if error.index < len(positions) else len(text) + 1
    return f"{error.message} at column {column}"
