"""The calc client's input: plain text or the assignment's ``operations.7z``, and a generator."""

from __future__ import annotations

import contextlib
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
def opened_text(path: Path) -> Iterator[tuple[Path, int]]:
    """Yield a path to plain text and its size, extracting a ``.7z`` archive first.

    The archive is extracted to a temporary folder and streamed from disk, so a large
    workload is never held in memory.

    Raises:
        InputError: the file is missing, unreadable, or an archive without one file in it.
        MissingExtra: an archive, without py7zr (the ``archive`` extra).
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(SEVEN_ZIP_MAGIC))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != SEVEN_ZIP_MAGIC:
        yield path, path.stat().st_size
        return
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
