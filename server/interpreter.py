"""The arithmetic interpreter: Python's arithmetic, evaluated without ``eval``.

Two paths for one line, and a third for a whole job (:func:`evaluate_batch`): its flat
lines are evaluated together with numpy, in :mod:`~forkwire.server.lockstep`. The
line-by-line fast path takes what nearly every line of a real workload is: ``+ - * /``
and parentheses over plain decimal literals, separated by blanks. It tokenizes with
``str.split`` (C speed) and evaluates as it parses, in an operator-precedence loop with
two pending levels (the running sum and the running product) and a stack that saves both
at each ``(``: building and walking a tree would cost more than the arithmetic. Anything
it does not recognise (another operator, a literal such as ``1e5`` or ``0x1F``, a comment,
no blanks between tokens, a newline) goes to :mod:`~forkwire.server.grammar`, which has
the whole grammar and is the reference for error messages.

Semantics are Python's for the same text: ints stay ints, ``/`` is true division, every
operator is applied to the same operands in the order CPython's compiled code would, so
results are identical, value and type, down to the last bit of a float. It never calls
``eval``, ``exec`` or ``compile``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from forkwire.server import grammar, lockstep
from forkwire.server.grammar import MAX_INT_BITS, ExpressionError, Number

__all__ = ["DEFAULT_LIMITS", "ExpressionError", "Limits", "Number", "evaluate", "evaluate_batch"]


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

# Operands of the real workload are 1..99; a dict hit skips int() for nearly all of them.
_SMALL_INTS: Final = {str(i): i for i in range(1000)}
_DECIMAL: Final = re.compile(r"[0-9]+\.[0-9]*|\.[0-9]+", re.ASCII)


class _Unsplit(Exception):
    """The fast loop met something it does not handle; the whole grammar takes the line."""


def evaluate(text: str, limits: Limits = DEFAULT_LIMITS) -> Number:
    """Evaluate one expression.

    Raises:
        ExpressionError: with code ``syntax``, ``too_long``, ``too_deep``,
            ``division_by_zero``, ``overflow`` or ``complex``.
    """
    if len(text) > limits.max_length:
        raise ExpressionError(
            "too_long", f"expression of {len(text)} characters exceeds {limits.max_length}"
        )
    if text.isprintable():
        try:
            return _checked(_run(text.split(), limits))
        except _Unsplit:
            pass
        except ZeroDivisionError:
            # Python compiles the whole line before evaluating any of it, so ``1 / 0 +``
            # is a syntax error, not a division by zero: the loop met the division first.
            _check_form(text, limits)
            raise ExpressionError("division_by_zero", "division by zero") from None
        except OverflowError as exc:
            _check_form(text, limits)
            raise ExpressionError("overflow", str(exc)) from None
    try:
        return _checked(grammar.evaluate(text, limits.max_depth, limits.max_digits))
    except OverflowError as exc:  # from _checked
        raise ExpressionError("overflow", str(exc)) from None


def evaluate_batch(
    ops: list[str], limits: Limits = DEFAULT_LIMITS
) -> tuple[list[Number | None], list[tuple[int, str, str]]]:
    """Evaluate a job; return the values in order and ``(index, code, message)`` errors.

    The job's flat lines are evaluated together (:mod:`~forkwire.server.lockstep`), every
    other line by :func:`evaluate`; the results are the same either way.
    """
    results, others = lockstep.evaluate_flat(ops, limits.max_length, limits.max_digits)
    errors: list[tuple[int, str, str]] = []
    for index in others:
        try:
            results[index] = evaluate(ops[index], limits)
        except ExpressionError as exc:
            errors.append((index, exc.code, exc.message))
    return results, errors


def _check_form(text: str, limits: Limits) -> None:
    """Raise the syntax or limit error of ``text``, if it has one."""
    grammar.check(text, limits.max_depth, limits.max_digits)


def _checked(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            # JSON has no inf or nan; Python would print one, we report why there is none.
            raise OverflowError(f"result is not a finite number ({value!r})")
    elif value.bit_length() > MAX_INT_BITS:
        raise OverflowError("integer result has more than 4300 digits")
    return value


def _literal(token: str, limits: Limits) -> Number:
    if token.isdigit() and token.isascii():
        if len(token) > limits.max_digits:
            raise ExpressionError(
                "too_long", f"literal of {len(token)} digits exceeds {limits.max_digits}"
            )
        if token[0] == "0" and token.strip("0"):
            raise _Unsplit  # leading zeros: the grammar words the syntax error
        return int(token)
    if _DECIMAL.fullmatch(token):
        if len(token) - 1 > limits.max_digits:
            raise ExpressionError(
                "too_long", f"literal of {len(token) - 1} digits exceeds {limits.max_digits}"
            )
        return float(token)
    raise _Unsplit


def _run(tokens: list[str], limits: Limits) -> Number:
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
    for token in tokens:
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
                value = _literal(token, limits)
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
                raise _Unsplit
            # The group's value is an operand of the level that opened it.
            if not addop:
                value = term
            elif addop == "+":
                value = acc + term
            else:
                value = acc - term
            acc, addop, term, mulop, neg = stack.pop()
        else:
            raise _Unsplit
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
        raise _Unsplit
    if not addop:
        return term
    if addop == "+":
        return acc + term
    return acc - term
