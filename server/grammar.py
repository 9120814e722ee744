"""The whole arithmetic grammar, for every line the interpreter's fast loop declines.

Python's own grammar, restricted to arithmetic::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/" | "//" | "%") factor)*
    factor := ("+" | "-") factor | power
    power  := atom ["**" factor]          (so -2 ** 2 is -4, and 2 ** 3 ** 2 is 512)
    atom   := NUMBER | "(" expr ")"

NUMBER is any int or float literal Python accepts: ``0x1F``, ``0o17``, ``0b101``,
``1_000``, ``1e5``, ``1.5E-3``, ``.5``, ``5.``; leading zeros only in an all-zero int.
Between tokens: blanks (space, tab, form feed), a comment to the end of the line, newlines
inside parentheses, a backslash before a newline; blank lines before, and a newline (and
comment lines) after. ``\\r\\n`` and ``\\r`` are newlines, as for ``compile``.

Not arithmetic, so outside the grammar (``syntax``): imaginary literals (``1j``: JSON has
no complex number), bitwise operators, names, calls, comparisons. A result Python would
give as a complex number (``(-8) ** 0.5``), or a ``//`` or ``%`` that Python refuses
because an operand became complex, answers ``complex``; the computation carries complex
values on as Python does, so an error Python meets first is still the one reported.

The line is checked whole before anything is computed, as Python compiles before it runs:
``1 / 0 +`` is a syntax error, not a division by zero. Then it is evaluated with an
operator stack (shunting-yard), applying Python's operators in the order CPython's code
would, so values, types and the error raised first are Python's. One bound is ours: no
integer in the computation may exceed 4,300 digits (the most Python will print), and a
``**`` or ``*`` that would exceed it is refused before it is computed (``overflow``), so a
short line such as ``9 ** 9 ** 9`` costs microseconds, not minutes.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

Number = int | float

#: Python refuses to turn an int of more than 4,300 digits into text (CVE-2020-10735); a
#: result that large could not be written to the results file, so it is an overflow.
MAX_INT_BITS: Final = int(4300 * math.log2(10))


class ExpressionError(Exception):
    """An expression has no value; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_DIGITS = r"[0-9](?:_?[0-9])*"
_EXPONENT = rf"[eE][-+]?{_DIGITS}"
_NUMBER: Final = re.compile(
    rf"""
    (?P<prefixed> 0[xX](?:_?[0-9a-fA-F])+ | 0[oO](?:_?[0-7])+ | 0[bB](?:_?[01])+ )
  | (?P<float> (?:{_DIGITS})?\.{_DIGITS}(?:{_EXPONENT})?
             | {_DIGITS}\.(?:{_EXPONENT})?
             | {_DIGITS}{_EXPONENT} )
  | (?P<int> {_DIGITS} )
    """,
    re.VERBOSE | re.ASCII,
)
_OPERATOR: Final = re.compile(r"\*\*|//|[-+*/%()]")
_BLANKS: Final = frozenset(" \t\f")
_NEWLINES: Final = frozenset("\r\n")
_WORD: Final = re.compile(r"[0-9A-Za-z_]", re.ASCII)
_BASES: Final = {"x": 16, "o": 8, "b": 2}

#: Binding power of each operator; unary signs (``u+``, ``u-``) bind looser than ``**``
#: on their right, tighter than the rest.
_PRECEDENCE: Final = {
    "+": 1,
    "-": 1,
    "*": 2,
    "/": 2,
    "//": 2,
    "%": 2,
    "u+": 3,
    "u-": 3,
    "**": 4,
}
_BINARY: Final[dict[str, Callable[[Any, Any], Number | complex]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
}


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    column: int
    value: Number | None = None  # set for a number


def evaluate(text: str, max_depth: int, max_digits: int) -> Number:
    """The value of ``text``; see the module docs for the grammar.

    Raises:
        ExpressionError: ``syntax``, ``too_long`` (a literal over ``max_digits``),
            ``too_deep``, ``division_by_zero``, ``overflow`` or ``complex``.
    """
    tokens = _tokenize(text, max_depth, max_digits)
    _check(tokens, len(text) + 1, max_depth)
    try:
        value = _run(tokens)
    except ZeroDivisionError:
        raise ExpressionError("division_by_zero", "division by zero") from None
    except OverflowError as exc:
        raise ExpressionError("overflow", str(exc)) from None
    except TypeError:  # // or % with a complex operand
        raise ExpressionError("complex", "// and % are not defined for complex numbers") from None
    if isinstance(value, complex):
        raise ExpressionError("complex", "the result is a complex number")
    return value


def check(text: str, max_depth: int, max_digits: int) -> None:
    """Raise the syntax or limit error of ``text``, if it has one, without computing."""
    _check(_tokenize(text, max_depth, max_digits), len(text) + 1, max_depth)


def _syntax(message: str, column: int) -> ExpressionError:
    return ExpressionError("syntax", f"{message} at column {column}")


def _tokenize(text: str, max_depth: int, max_digits: int) -> list[_Token]:
    """The tokens of the logical line; raises on a character outside the grammar."""
    tokens: list[_Token] = []
    depth = 0
    ended = 0  # the column of a newline outside parentheses that closed the line
    i, size = 0, len(text)
    while i < size:
        char = text[i]
        if char in _BLANKS:
            i += 1
        elif char == "#":
            while i < size and text[i] not in _NEWLINES:
                i += 1
        elif char in _NEWLINES:
            if depth == 0 and tokens and not ended:
                ended = i + 1
            i += 2 if text.startswith("\r\n", i) else 1
        elif char == "\\":
            after = text[i + 1 : i + 2]
            if after not in ("\r", "\n"):
                raise _syntax("unexpected character after a line continuation", i + 1)
            i += 3 if text.startswith("\r\n", i + 1) else 2
            if i >= size:
                raise _syntax("expression is incomplete", i + 1)
        elif ended:
            _check(tokens, ended, max_depth)  # the line itself may be incomplete
            raise _syntax(f"unexpected {char!r} after the end of the line", i + 1)
        elif match := _NUMBER.match(text, i):
            end = match.end()
            if end < size and _WORD.match(text, end):
                kind = "complex numbers are not supported" if text[end] in "jJ" else None
                raise _syntax(kind or "invalid literal", i + 1)
            tokens.append(_Token(match.group(), i + 1, _number(match, max_digits)))
            i = end
        elif match := _OPERATOR.match(text, i):
            tokens.append(_Token(match.group(), i + 1))
            depth += {"(": 1, ")": -1}.get(match.group(), 0)
            i = match.end()
        else:
            raise _syntax(f"unexpected {char!r}", i + 1)
    return tokens


def _number(match: re.Match[str], max_digits: int) -> Number:
    literal = match.group().replace("_", "")
    if match.group("prefixed"):
        digits = len(literal) - 2
    elif match.group("float"):
        digits = sum(c.isdigit() for c in literal)
    else:
        digits = len(literal)
    if digits > max_digits:
        raise ExpressionError("too_long", f"literal of {digits} digits exceeds {max_digits}")
    if match.group("prefixed"):
        return int(literal[2:], _BASES[literal[1].lower()])
    if match.group("float"):
        return float(literal)
    if literal[0] == "0" and literal.strip("0"):
        raise _syntax(
            "leading zeros in decimal integer literals are not permitted", match.start() + 1
        )
    return int(literal)


def _check(tokens: list[_Token], end: int, max_depth: int) -> None:
    """Raise the first syntax error (or ``too_deep``) of the token sequence."""
    expect_operand = True
    depth = 0
    for token in tokens:
        text = token.text
        if expect_operand:
            if token.value is not None:
                expect_operand = False
            elif text == "(":
                depth += 1
                if depth > max_depth:
                    raise ExpressionError("too_deep", f"more than {max_depth} nested parentheses")
            elif text not in ("+", "-"):
                raise _syntax(f"unexpected {text!r}", token.column)
        elif token.value is not None or text == "(":
            raise _syntax(f"unexpected {text!r} after an operand", token.column)
        elif text == ")":
            if depth == 0:
                raise _syntax("unmatched ')'", token.column)
            depth -= 1
        else:
            expect_operand = True
    if expect_operand:
        raise _syntax("expression is incomplete", end)
    if depth:
        raise _syntax("'(' was never closed", end)


def _run(tokens: list[_Token]) -> Number | complex:
    """Evaluate a checked token sequence with an operator stack."""
    values: list[Number | complex] = []
    pending: list[str] = []
    expect_operand = True
    for token in tokens:
        text = token.text
        if token.value is not None:
            values.append(token.value)
            expect_operand = False
        elif text == "(":
            pending.append(text)
        elif text == ")":
            while pending[-1] != "(":
                _apply(pending.pop(), values)
            pending.pop()
        elif expect_operand:
            pending.append("u" + text)  # a sign: applies to the factor that follows
        else:
            precedence = _PRECEDENCE[text]
            # ** groups to the right: only a tighter operator before it is done first.
            while pending and pending[-1] != "(":
                before = _PRECEDENCE[pending[-1]]
                if before < precedence or (before == precedence and text == "**"):
                    break
                _apply(pending.pop(), values)
            pending.append(text)
            expect_operand = True
    while pending:
        _apply(pending.pop(), values)
    (value,) = values
    return value


def _apply(op: str, values: list[Number | complex]) -> None:
    if op == "u-":
        values[-1] = -values[-1]
        return
    if op == "u+":
        values[-1] = +values[-1]
        return
    right = values.pop()
    left = values[-1]
    if op == "**":
        result = _power(left, right)
    elif op == "*" and type(left) is int and type(right) is int:
        if left.bit_length() + right.bit_length() - 1 > MAX_INT_BITS:
            raise OverflowError("integer result has more than 4300 digits")
        result = left * right
    else:
        result = _BINARY[op](left, right)
    values[-1] = result


def _power(base: Number | complex, exponent: Number | complex) -> Number | complex:
    # |base| ** exponent has about exponent * log2|base| bits: refuse before computing.
    if (
        type(base) is int
        and type(exponent) is int
        and exponent > 0
        and abs(base) > 1
        and exponent * math.log2(abs(base)) > MAX_INT_BITS + 1
    ):
        raise OverflowError("integer result has more than 4300 digits")
    result: Number | complex = base**exponent
    return result
