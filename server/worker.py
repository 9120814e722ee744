"""What runs inside a job's child process.

Kept apart from ``jobs.py`` so that the forkserver preloads only this module and the
interpreter: every job forks from a process that has nothing else in memory.

The child also encodes its answer as the JSON the reply carries (see :class:`Answer`):
a 262,144-expression job then costs the parent's event loop a splice of two byte strings
instead of unpickling, building and serializing a quarter of a million objects, which
stalled every other client for about a second. And the child, which has the values, is
the one that keeps the reply within ``max_reply``.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import NamedTuple

import orjson

from forkwire.server.childlog import json_stderr_if_asked
from forkwire.server.interpreter import Limits, Number, evaluate_batch

#: Bytes of a calc_result that are not results or errors: the frame header, type, id (at
#: most 19 digits) and field names, rounded up.
ENVELOPE = 128
#: ExpressionCode.TOO_LARGE, spelled out: the child imports nothing of the protocol.
TOO_LARGE = "too_large"


class Answer(NamedTuple):
    """A job's answer as the child sends it: the reply's two arrays, already JSON.

    ``oversize`` is not 0 when even the errors would not fit ``max_reply`` (it says how
    many bytes they would take): the arrays are then empty and the job as a whole is
    refused.
    """

    size: int
    results: bytes
    errors: bytes
    error_count: int
    oversize: int = 0


def run_job(conn: Connection, limits: Limits, max_reply: int) -> None:
    """Child entry: receive one batch of expressions, send back the answer, exit.

    Exceptions never cross the pipe: every failure is an ``(index, code, message)`` entry.
    """
    # The parent owns the child's lifetime; a Ctrl-C that reaches the whole process group
    # must not turn running jobs into crashes while the parent drains them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    json_stderr_if_asked()  # a traceback of this child must not break a JSON log
    try:
        ops = conn.recv()
        conn.send(encode_answer(*evaluate_batch(ops, limits), max_reply=max_reply))
    except BaseException:
        # Told before the pipe closes: the parent kills the child once it reads EOF, so a
        # traceback printed later (by multiprocessing) would be lost or cut off.
        traceback.print_exc()
        sys.stderr.flush()
        raise SystemExit(1) from None
    finally:
        conn.close()


def encode_answer(
    results: list[Number | None], errors: list[tuple[int, str, str]], *, max_reply: int
) -> Answer:
    """The JSON of ``results`` and ``errors``, within ``max_reply`` bytes in all.

    Results are kept in order while they fit; one that would take the reply past the bound
    becomes a ``too_large`` error (a smaller one after it may still fit). If the errors
    alone would not fit, the answer is ``oversize``.
    """
    budget = max_reply - ENVELOPE
    encoded_results = _dumps_fast(results)
    encoded_errors = _dumps_fast([_error(*error) for error in errors])
    if len(encoded_results) + len(encoded_errors) <= budget:
        return Answer(len(results), encoded_results, encoded_errors, len(errors))
    return _fit(list(results), list(errors), len(encoded_errors), budget)


def _fit(
    results: list[Number | None], errors: list[tuple[int, str, str]], errors_size: int, budget: int
) -> Answer:
    # Start from every result as null and the errors as they are, then let the values in,
    # in order, while they fit.
    used = 2 + 5 * len(results) + errors_size + 1
    message = f"the result does not fit the reply's {budget + ENVELOPE} bytes (max_reply)"
    for index, value in enumerate(results):
        if value is None:
            continue
        extra = len(repr(value)) - 4  # in place of null (JSON writes numbers as repr does)
        if used + extra <= budget:
            used += extra
            continue
        results[index] = None
        errors.append((index, TOO_LARGE, message))
        used += len(_dumps(_error(index, TOO_LARGE, message))) + 1
    if used > budget:
        return Answer(len(results), b"[]", b"[]", 0, oversize=used + ENVELOPE)
    errors.sort()
    return Answer(len(results), _dumps(results), _dumps([_error(*e) for e in errors]), len(errors))


def _error(index: int, code: str, message: str) -> dict[str, object]:
    return {"index": index, "code": code, "message": message}


def _dumps(value: object) -> bytes:
    # Python's own float repr (what _fit's sizes count on); no NaN or inf ever reaches here.
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _dumps_fast(value: object) -> bytes:
    """``value`` as JSON, by orjson: a 20,000-result job in 0.3 ms instead of 4 ms (the
    json module's float repr), measured. Its floats are shortest round-trip too, in a
    layout of its own (``0.00001`` where repr writes ``1e-05``), which the protocol allows:
    a client reads the value, not the text. Ints past 64 bits are written by the json
    module. Every float here is finite (the interpreter answers ``overflow`` otherwise),
    so orjson's writing NaN and inf as null never happens.
    """
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: an int of more than 64 bits
        return _dumps(value)
