"""The interpreter's batch path: every flat line of a job evaluated at once, with numpy.

Nearly every line of a real workload is flat: decimal literals joined by ``+ - * /``
with one blank on each side of each operator (``38 - 83 * 52 / 7``). A job holds
thousands of them, so instead of walking each line's tokens in Python, this module reads
the whole job as one byte array, checks the shape of every line with array operations,
and evaluates all flat lines together, one operator position at a time (lockstep): at
step k every line applies its k-th operator to its (k+1)-th literal.

Exactly Python's results, value and type. An int stays an int; a line with a ``/`` is a
float. A float64 holds an integer exactly below 2**53, and CPython computes ``a / b`` of
two such ints as ``float(a) / float(b)``, so as long as every integer a line produces
stays below 2**53 each float64 operation here is the one CPython performs, in the same
order, rounded the same way (IEEE 754, round to nearest). A line whose integers would
grow past that, divides by zero, is longer than :data:`MAX_OPERATORS`, or is not flat
at all is left to the line-by-line interpreter, which also words every error.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from forkwire.server.grammar import Number

#: Below this many lines a job is evaluated line by line. In a job's fresh child process
#: numpy's first use costs about a thousand page faults (copy-on-write of everything it
#: touches) and first-call set-up, a few milliseconds that a job of fewer lines does not
#: earn back (measured in children: 2,000-line jobs took more CPU this way, 10,000-line
#: jobs less).
MIN_LINES = 4096
#: Lines evaluated together at most (a job is cut into chunks of equal size): their arrays
#: stay in the CPU's caches (4,096 to 8,192 lines took the least time per line on the
#: real workload, 500 to 16,000 measured).
CHUNK: Final = 4096
#: Longest flat line taken here, in operators; longer ones go line by line.
MAX_OPERATORS: Final = 32
#: Most digits of a literal taken here: every such literal is exact in a float64.
MAX_LITERAL_DIGITS: Final = 15
_EXACT: Final = float(2**53)

_DIGIT, _SPACE, _OP, _END, _OTHER = range(5)
_NOP, _MUL, _DIV, _ADD, _SUB = range(5)  # ADD and SUB last: code >= _ADD folds

_CLASS = np.full(256, _OTHER, dtype=np.int8)
_CLASS[ord("0") : ord("9") + 1] = _DIGIT
_CLASS[ord(" ")] = _SPACE
for _char in "+-*/":
    _CLASS[ord(_char)] = _OP
_OPCODE = np.zeros(256, dtype=np.int8)
for _char, _code in zip("+-*/", (_ADD, _SUB, _MUL, _DIV), strict=True):
    _OPCODE[ord(_char)] = _code
_POW10 = 10.0 ** np.arange(MAX_LITERAL_DIGITS + 1)


def evaluate_flat(
    ops: list[str], max_length: int, max_digits: int
) -> tuple[list[Number | None], list[int]]:
    """The value of every flat line of ``ops`` that this path can take, None for the
    rest, and the indexes of the rest (in order), which the caller evaluates one by one.
    """
    count = len(ops)
    if count < MIN_LINES:
        return [None] * count, list(range(count))
    # Chunks of equal size: a job of 10,000 lines cut at every CHUNK lines left a last
    # chunk of 1,808 to the line-by-line loop, at about twice the cost per line.
    size = -(-count // -(-count // CHUNK))
    results: list[Number | None] = []
    others: list[int] = []
    for offset in range(0, count, size):
        values, declined = _evaluate_chunk(ops[offset : offset + size], max_length, max_digits)
        results += values
        others += (offset + index for index in declined)
    return results, others


def _evaluate_chunk(
    ops: list[str], max_length: int, max_digits: int
) -> tuple[list[Number | None], list[int]]:
    count = len(ops)
    lengths = np.fromiter(map(len, ops), dtype=np.int64, count=count)
    # One byte per character: anything outside ASCII becomes "?", which no flat line has,
    # and the offsets of every line stay those of its characters.
    data = np.frombuffer(("\n".join(ops) + "\n").encode("ascii", "replace"), dtype=np.uint8)
    ends = np.cumsum(lengths + 1) - 1  # where each line's separator sits
    starts = ends - lengths
    line_of = np.repeat(np.arange(count), lengths + 1)  # the line of every byte
    classes = _CLASS[data]
    classes[ends] = _END  # a newline inside a line stays _OTHER: not flat

    good = (lengths > 0) & (lengths <= max_length) & (classes[starts] == _DIGIT)
    good &= ~np.logical_or.reduceat(~_well_placed(classes), starts)
    literals, first, refused = _literals(data, classes, min(max_digits, MAX_LITERAL_DIGITS))
    literal_line = line_of[first]
    good[literal_line[refused]] = False
    operators = np.flatnonzero(classes == _OP)
    operator_line = line_of[operators]
    per_line = np.bincount(operator_line, minlength=count)
    good &= per_line <= MAX_OPERATORS

    rows = np.flatnonzero(good)
    if rows.size == 0:
        return [None] * count, list(range(count))
    width = int(per_line[rows].max())
    # The good lines' literals and operators as the columns of a matrix, NOP-padded.
    row_of_line = np.full(count, -1, dtype=np.int64)
    row_of_line[rows] = np.arange(rows.size)
    numbers = np.zeros((width + 1, rows.size))
    _scatter(numbers, literals, literal_line, good, row_of_line, count)
    codes = np.full((width, rows.size), _NOP, dtype=np.int8)
    _scatter(codes, _OPCODE[data[operators]], operator_line, good, row_of_line, count)

    values, is_int, exact = _lockstep(numbers, codes)
    results = np.full(count, None, dtype=object)
    ints = exact & is_int
    floats = exact & ~is_int
    results[rows[ints]] = values[ints].astype(np.int64).tolist()
    results[rows[floats]] = values[floats].tolist()
    good[rows[~exact]] = False
    return results.tolist(), np.flatnonzero(~good).tolist()


def _scatter(
    matrix: npt.NDArray[Any],
    items: npt.NDArray[Any],
    item_line: npt.NDArray[np.int64],
    good: npt.NDArray[np.bool_],
    row_of_line: npt.NDArray[np.int64],
    count: int,
) -> None:
    """Put each good line's items, in order, into its column of ``matrix``."""
    per_line = np.bincount(item_line, minlength=count)
    first_of_line = np.cumsum(per_line) - per_line
    keep = good[item_line]
    line = item_line[keep]
    matrix[np.flatnonzero(keep) - first_of_line[line], row_of_line[line]] = items[keep]


def _well_placed(classes: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """Per byte: may it stand where it stands in a flat line?

    A blank sits between a digit and an operator (either way round), an operator between
    two blanks, and a line ends with a digit. With a line that starts with a digit
    (checked by the caller) these make every flat line ``literal (blank op blank
    literal)*`` and nothing else.
    """
    before = np.empty_like(classes)
    before[0] = _END
    before[1:] = classes[:-1]
    after = np.empty_like(classes)
    after[-1] = _END
    after[:-1] = classes[1:]
    placed: npt.NDArray[np.bool_] = classes == _DIGIT
    placed |= (classes == _OP) & (before == _SPACE) & (after == _SPACE)
    placed |= (classes == _SPACE) & (
        ((before == _DIGIT) & (after == _OP)) | ((before == _OP) & (after == _DIGIT))
    )
    placed |= (classes == _END) & (before == _DIGIT)  # a line ends with a digit
    return placed


def _literals(
    data: npt.NDArray[np.uint8], classes: npt.NDArray[np.int8], digits: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Every run of digits as a number, where it starts, and whether this path must leave
    its line alone (over ``digits`` digits, or a leading zero: Python refuses ``007``)."""
    is_digit = (classes == _DIGIT).view(np.int8)
    edge = np.diff(is_digit, prepend=np.int8(0), append=np.int8(0))
    first = np.flatnonzero(edge == 1)
    size = np.flatnonzero(edge == -1) - first
    refused = (size > digits) | ((data[first] == ord("0")) & (size > 1))
    values = (data[first] - ord("0")).astype(np.float64)
    for offset in range(1, min(int(size.max(initial=0)), digits)):
        inside = size > offset
        place = first[inside] + offset
        values[inside] = values[inside] * 10 + (data[place] - ord("0"))
    return values, first, refused


def _lockstep(
    numbers: npt.NDArray[np.float64], codes: npt.NDArray[np.int8]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Evaluate every column left to right: ``numbers[0] codes[0] numbers[1] ...``.

    One column per line, so each step reads contiguous memory. Python's precedence with
    two pending levels, as the line-by-line loop has them: a running sum ``acc`` and a
    running product ``term`` that carries the sign of the ``+``/``-`` that started it
    (``acc - a * b`` is ``acc + (-a) * b`` in IEEE 754, bit for bit: negation is exact and
    rounding is symmetric). Each step is the same array operations for every line,
    whatever its operator, with factors that make the other operators' parts exact
    identities (``x * 1.0``, ``x / 1.0``, ``x + 0.0``): at a ``+``/``-`` the sum takes
    the term and the term restarts as ``term * 0.0 + (±literal)``; at a ``*`` or ``/``
    the term takes the literal. The sum is never -0.0 and nothing is infinite (the
    literals are small), so each identity holds.

    Returns each line's value, whether it is an int (no ``/`` on the line), and whether
    this path's result is Python's (False: a value reached 2**53, where a float64 stops
    holding every integer, or a division by zero).
    """
    lines = codes.shape[1]
    literal = numbers[1:]
    divide = codes == _DIV
    fold = codes >= _ADD
    take = fold.astype(np.float64)
    times = np.where(codes == _MUL, literal, 1.0 - take)
    over = np.where(divide, literal, 1.0)
    plus = np.where(codes == _SUB, -literal, literal) * take

    term = numbers[0].copy()
    acc = np.zeros(lines)
    high = term.copy()
    low = np.zeros(lines)
    scratch = np.empty(lines)
    with np.errstate(all="ignore"):  # a line dividing by zero is not exact: see below
        for step in range(codes.shape[0]):
            np.multiply(term, take[step], out=scratch)
            np.add(acc, scratch, out=acc)
            np.multiply(term, times[step], out=term)
            np.divide(term, over[step], out=term)
            np.add(term, plus[step], out=term)
            np.maximum(high, term, out=high)
            np.minimum(low, term, out=low)
            np.maximum(high, acc, out=high)
            np.minimum(low, acc, out=low)
        values = acc + term
    exact = ~(divide & (literal == 0)).any(axis=0)
    exact &= (high < _EXACT) & (low > -_EXACT) & (np.abs(values) < _EXACT)
    return values, ~divide.any(axis=0), exact
