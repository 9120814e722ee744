"""The calc client's jobs: lines grouped into batches that fit one frame, and their answers.

A batch is one job. Its lines are sent as they are, except a line too long for any frame,
which is answered here with a ``too_long`` error line and never sent.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class Batch:
    """One job's lines; ``local`` holds lines answered without the server."""

    texts: list[str] = field(default_factory=list)
    chars: int = 0
    local: dict[int, str] = field(default_factory=dict)

    def ops(self) -> list[str]:
        """The lines the server is asked to evaluate."""
        if not self.local:
            return self.texts
        return [text for i, text in enumerate(self.texts) if i not in self.local]


def _is_plain(text: str) -> bool:
    # Printable ASCII without quotes or backslashes: its JSON string is itself plus quotes.
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def _payload_size(text: str) -> int:
    # Exact JSON size only where escaping can grow the text.
    if _is_plain(text):
        return len(text) + 3
    return len(json.dumps(text)) + 1


def read_batches(lines: Iterable[str], *, batch: int, budget: int) -> Iterator[Batch]:
    """Group lines into jobs of at most ``batch`` lines and ``budget`` payload bytes.

    A line that could not fit in any frame becomes a local ``too_long`` error line.
    """
    source = iter(lines)
    while chunk := list(itertools.islice(source, batch)):
        # The input splits at \n only; a CRLF line keeps its \r until here.
        texts = [raw.removesuffix("\n").removesuffix("\r") for raw in chunk]
        joined = "".join(texts)
        # Nearly every chunk is plain text that fits: checked once for the whole chunk,
        # in C, instead of line by line.
        if _is_plain(joined) and len(joined) + 3 * len(texts) <= budget:
            yield Batch(texts, chars=len(joined) + len(texts))
        else:
            yield from _split(chunk, texts, budget)


def _split(raws: list[str], texts: list[str], budget: int) -> Iterator[Batch]:
    """The careful path: size every line, cut where the budget is reached."""
    current = Batch()
    size = 0
    for raw, text in zip(raws, texts, strict=True):
        need = _payload_size(text)
        if current.texts and size + need > budget:
            yield current
            current = Batch()
            size = 0
        if need > budget:
            current.local[len(current.texts)] = (
                f"error: too_long: line of {need} bytes is over the {budget}-byte "
                "budget of one request"
            )
        else:
            size += need
        current.texts.append(text)
        current.chars += len(raw)
    if current.texts:
        yield current


def format_answers(batch: Batch, results: Sequence[object], errors: dict[int, str]) -> list[str]:
    """One output line per input line of the batch: ``repr`` of the value or the error."""
    if not batch.local:
        lines = list(map(repr, results))
        for index, line in errors.items():
            lines[index] = line
        return lines
    answers = iter(zip(results, range(len(results)), strict=True))
    lines = []
    for index in range(len(batch.texts)):
        local = batch.local.get(index)
        if local is not None:
            lines.append(local)
            continue
        value, op_index = next(answers)
        lines.append(repr(value) if value is not None else errors[op_index])
    return lines
