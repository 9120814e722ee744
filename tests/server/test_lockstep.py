"""A job's flat lines evaluated together (lockstep) give exactly what each line gives on
its own: value, type and repr, float bits included, and the same errors, for batches
that mix flat lines with near misses of every kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fwtest import REAL_OPERATIONS
from hypothesis import given, settings
from hypothesis import strategies as st

from forkwire.server import lockstep
from forkwire.server.interpreter import (
    DEFAULT_LIMITS,
    ExpressionError,
    Limits,
    evaluate,
    evaluate_batch,
)
from forkwire.server.lockstep import CHUNK, MAX_OPERATORS, evaluate_flat

#: Batches this small take the arrays here (the product waits for bigger jobs).
MIN_LINES = 32


@pytest.fixture(autouse=True, scope="module")
def _small_batches_take_the_arrays() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lockstep, "MIN_LINES", MIN_LINES)
        yield


def one_by_one(ops: list[str], limits: Limits) -> list[object]:
    """Each line on its own, as (type, repr) or its error code."""
    answers: list[object] = []
    for text in ops:
        try:
            value = evaluate(text, limits)
        except ExpressionError as exc:
            answers.append(exc.code)
        else:
            answers.append((type(value), repr(value)))
    return answers


def together(ops: list[str], limits: Limits) -> list[object]:
    """The batch, as the job's child evaluates it, in the same shape."""
    values, errors = evaluate_batch(ops, limits)
    answers: list[object] = [(type(v), repr(v)) for v in values]
    for index, code, _ in errors:
        assert values[index] is None
        answers[index] = code
    assert [index for index, _, _ in errors] == sorted(index for index, _, _ in errors)
    return answers


literals = st.one_of(
    st.integers(0, 99),
    st.sampled_from([0, 1, 10**15 - 1, 10**15, 2**53 - 1, 2**53, 2**53 + 1, 10**20]),
    st.integers(0, 10**16),
).map(str)
flat_lines = st.builds(
    lambda first, rest: " ".join([first, *(f"{op} {lit}" for op, lit in rest)]),
    literals,
    st.lists(st.tuples(st.sampled_from("+-*/"), literals), max_size=14),
)
# Near misses: each must be left to the line-by-line path and answered as it answers.
near_misses = st.one_of(
    flat_lines.map(lambda line: line.replace(" ", "  ", 1)),
    flat_lines.map(lambda line: "0" + line),
    flat_lines.map(lambda line: "-" + line),
    flat_lines.map(lambda line: line + " +"),
    flat_lines.map(lambda line: line + "\n"),
    flat_lines.map(lambda line: line.replace(" ", "\t", 1)),
    flat_lines.map(lambda line: f"({line})"),
    flat_lines.map(lambda line: line.replace("1", "\u0661")),  # an Arabic-Indic one
    st.sampled_from(["", " ", "1 / 0", "7 // 2", "2 ** 10", "1e5", "import os", "99999"]),
)
batches = st.lists(
    st.one_of(flat_lines, flat_lines, flat_lines, near_misses), min_size=MIN_LINES, max_size=80
)


@settings(max_examples=200, deadline=None)
@given(ops=batches)
def test_a_batch_answers_as_its_lines_do(ops: list[str]) -> None:
    assert together(ops, DEFAULT_LIMITS) == one_by_one(ops, DEFAULT_LIMITS)


@settings(max_examples=50, deadline=None)
@given(ops=batches, max_length=st.integers(1, 60), max_digits=st.integers(1, 20))
def test_tight_limits_are_the_same_limits(ops: list[str], max_length: int, max_digits: int) -> None:
    limits = Limits(max_length=max_length, max_depth=5, max_digits=max_digits)
    assert together(ops, limits) == one_by_one(ops, limits)


def test_flat_lines_are_taken_together_and_near_misses_are_not() -> None:
    """The point of the path: nearly every line of a flat workload is evaluated in the
    arrays, and nothing that is not flat is."""
    flat = [f"{i % 97} + {i % 13} * {i % 7 + 1} / 3 - 4" for i in range(100)]
    odd = ["1  + 2", "01 + 2", "-1 + 2", "1 + 2\n", "(1 + 2)", "1 / 0", "", "2 ** 3"]
    odd.append(" + ".join(["1"] * (MAX_OPERATORS + 2)))  # longer than the arrays take
    values, others = evaluate_flat(flat + odd, 4096, 100)
    assert others == list(range(100, 109))
    assert values[:100] == [evaluate(line) for line in flat]


def test_integers_past_two_to_the_53_go_line_by_line() -> None:
    """A float64 holds every integer only below 2**53: lines that reach it are declined,
    and their answers are Python's exact ints."""
    big = [
        "94906267 * 94906267",
        "9007199254740993 - 0",
        "99 * 99 * 99 * 99 * 99 * 99 * 99 * 99 * 99",
    ]
    ops = big + ["1 + 1"] * MIN_LINES
    _, others = evaluate_flat(ops, 4096, 100)
    assert others == [0, 1, 2]
    values, errors = evaluate_batch(ops)
    assert values[:3] == [94906267**2, 9007199254740993, 99**9]
    assert errors == []


def test_more_lines_than_a_chunk_keep_their_indexes() -> None:
    ops = [f"{i % 1000} * 2" for i in range(CHUNK * 2 + 5)]
    ops[CHUNK + 1] = "1 / 0"
    values, errors = evaluate_batch(ops)
    assert values[CHUNK + 2] == ((CHUNK + 2) % 1000) * 2
    assert errors == [(CHUNK + 1, "division_by_zero", "division by zero")]


@pytest.mark.skipif(not REAL_OPERATIONS.exists(), reason="the real workload is not here")
def test_the_real_workload_answers_as_its_lines_do() -> None:
    ops = REAL_OPERATIONS.read_text(encoding="utf-8").split("\n")[:40_000]
    assert together(ops, DEFAULT_LIMITS) == one_by_one(ops, DEFAULT_LIMITS)
