"""The calc client's input: plain text or the assignment's ``operations.7z``, and a generator."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import random
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from forkwire.client.errors import InputError
from forkwire.client.extras import require

SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"

#: Lines like the ones the real workload hides among its 300,000 expressions, plus a few
#: more kinds of trouble: code, a sleep, a division by zero, nesting and a huge literal.
HOSTILE_LINES = (
    "import sys;sys.exit()",
    "import time;time.sleep(3600)",
    "__import__('os').system('echo pwned')",
    "1 / 0",
    "(" * 500 + "1" + ")" * 500,
    "9" * 5000,
)


@contextlib.contextmanager
def opened_lines(name: str) -> Iterator[tuple[TextIO, int | None]]:
    """Yield the lines of ``name`` (``-``: standard input) and its size in bytes if known.

    The input is opened once and read once, so a pipe, a FIFO or ``<(cmd)`` works like a
    file. Lines end at ``\n`` only (a CRLF's ``\r`` is dropped by the batcher): results
    then line up with the input as ``wc -l``, ``sed -n Np`` and ``paste`` count it, where
    universal newlines would split a line at a stray ``\r``, ``\x0b`` or ``\u2028``.
    Undecodable bytes become U+FFFD, not a failure. A ``.7z`` archive (a file, not a
    stream) is extracted to a temporary folder and streamed from disk.

    Raises:
        InputError: the input is missing, unreadable, or an archive without one file in it.
        MissingExtra: an archive, without py7zr (the ``archive`` extra).
    """
    try:
        if name == "-":
            raw: BinaryIO = sys.stdin.buffer
            size = None
        else:
            raw = open(name, "rb")  # noqa: SIM115 - closed below, or handed to the caller
            size = _regular_size(raw)
        magic = raw.peek(len(SEVEN_ZIP_MAGIC))[: len(SEVEN_ZIP_MAGIC)]  # type: ignore[attr-defined]
    except OSError as exc:
        shown = "standard input" if name == "-" else name
        raise InputError(f"cannot read {shown}: {exc.strerror or exc}") from None
    with contextlib.ExitStack() as stack:
        stdin = raw is sys.stdin.buffer
        if not stdin:
            stack.enter_context(raw)
        if magic == SEVEN_ZIP_MAGIC:
            if size is None:
                raise InputError(f"{name} is a 7z archive: give it as a file, not a stream")
            path, size = stack.enter_context(_extracted(Path(name)))
            raw = stack.enter_context(path.open("rb"))
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="\n")
        try:
            yield text, size
        finally:
            if stdin:
                text.detach()  # standard input is not ours to close


def _regular_size(handle: BinaryIO) -> int | None:
    """The size of a regular file; None for a pipe, FIFO or terminal (no size to show)."""
    status = os.fstat(handle.fileno())
    if stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder")
    return status.st_size if stat.S_ISREG(status.st_mode) else None


@contextlib.contextmanager
def _extracted(path: Path) -> Iterator[tuple[Path, int]]:
    py7zr = require("py7zr", "archive", f"reading {path} (a 7z archive)")
    with tempfile.TemporaryDirectory(prefix="forkwire-") as tmp:
        try:
            with py7zr.SevenZipFile(path, mode="r") as archive:
                names = [name for name in archive.getnames() if not name.endswith("/")]
                if len(names) != 1:
                    raise InputError(f"{path} holds {len(names)} files; expected exactly one")
                archive.extractall(path=tmp)
        except py7zr.exceptions.ArchiveError as exc:
            raise InputError(f"{path} is not a readable 7z archive: {exc}") from None
        extracted = Path(tmp) / names[0]
        yield extracted, extracted.stat().st_size


def generate_ops(
    lines: int,
    *,
    seed: int = 0,
    operands: tuple[int, int] = (4, 10),
    hostile_every: int = 2000,
) -> Iterator[str]:
    """Yield expressions in the shape of the real workload.

    Each line has ``operands`` numbers from 1 to 99 joined by ``+ - * /`` with single
    spaces (the real file has 4 to 10). Every ``hostile_every`` lines one of
    :data:`HOSTILE_LINES` takes the place of an expression.
    """
    rng = random.Random(seed)
    low, high = operands
    for number in range(1, lines + 1):
        if hostile_every and number % hostile_every == 0:
            yield HOSTILE_LINES[(number // hostile_every - 1) % len(HOSTILE_LINES)]
            continue
        count = rng.randint(low, high)
        parts = [str(rng.randint(1, 99))]
        for _ in range(count - 1):
            parts.append(rng.choice("+-*/"))
            parts.append(str(rng.randint(1, 99)))
        yield " ".join(parts)
