"""The rows of a replayed CSV file and the probe that turns each into a reading's value.

Values. With ``column``, a reading's value is that cell as a number: an int if it is
written as one (``42``, ``-7``), else a finite float (``2.5``, ``1e3``); a row whose cell
is not a number is skipped, logged and counted, and consumes no seq. Without ``column``,
the value is the whole row as a record: column name to cell, with the same number rule
applied to each cell and any other cell kept as its string (``""`` stays ``""``), so the
record keeps every field and the numbers are numbers for whoever reads the stream.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Final, TextIO

from pydantic import JsonValue

from forkwire.client.errors import InputError
from forkwire.client.logs import get_logger
from forkwire.client.sensors.sensor import StopProbing
from forkwire.protocol.messages import Value

log = get_logger("forkwire.replay")

_INT: Final = re.compile(r"[+-]?\d+")
_FLOAT: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def parse_number(text: str) -> int | float | None:
    """The number a CSV cell spells, or None: ints stay ints, floats must be finite."""
    cell = text.strip()
    if _INT.fullmatch(cell):
        number = int(cell)
        # A JSON reader of the stream (SQLite's, numpy's) holds ints in 64 bits.
        return number if -(2**63) <= number < 2**63 else float(number)
    if _FLOAT.fullmatch(cell):
        value = float(cell)
        return value if math.isfinite(value) else None
    return None


class CsvRows:
    """The data rows of a CSV file, read lazily; from the top again when looping.

    Opening checks everything that can be checked before a row is sent: the file is
    readable UTF-8, it has a header, the header names ``column`` once, and a data row
    follows. Later rows are read with undecodable bytes replaced, so one bad byte deep in
    a large file costs a character, not the run.

    Raises:
        InputError: any of the checks fails.
    """

    def __init__(self, path: Path, *, column: str | None, loop: bool) -> None:
        self.path = path
        self.loop = loop
        #: Starts from the top (1 after opening), and the line of the current row.
        self.passes = 0
        self.line = 0
        self.header = self._check(column)
        self._handle: TextIO | None = None
        # A csv reader object: an iterator of rows with a ``line_num``.
        self._reader: Any = iter(())
        self._start()

    def next(self) -> list[str]:
        """The next data row (blank lines skipped).

        Raises:
            StopProbing: the file ran out and ``loop`` is off.
            csv.Error: a malformed row (the reader goes on with the next one).
        """
        for _ in range(2):
            row: list[str]
            for row in self._reader:
                self.line = self._reader.line_num
                if row:
                    return row
            if not self.loop:
                raise StopProbing
            try:
                self._start()
            except OSError as exc:
                log.warning("cannot reopen the file, stopping", file=str(self.path), error=str(exc))
                raise StopProbing from None
        raise StopProbing  # a file emptied since it was checked

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _check(self, column: str | None) -> list[str]:
        try:
            with self.path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.reader(handle, skipinitialspace=True)
                header = next(reader, None)
                first = next((row for row in reader if row), None)
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path} is not UTF-8 text: {exc.reason}") from None
        except csv.Error as exc:
            raise InputError(f"{self.path} is not CSV: {exc}") from None
        if not header:
            raise InputError(f"{self.path} is empty: a CSV header and rows are needed")
        if first is None:
            raise InputError(f"{self.path} has a header but no rows")
        twice = sorted({name for name in header if header.count(name) > 1})
        if column is not None and column not in header:
            raise InputError(
                f"column {column!r} is not in {self.path}; its columns: {', '.join(header)}"
            )
        if twice and (column is None or column in twice):
            # A record (or the chosen cell) would silently keep one of them.
            raise InputError(f"{self.path} names columns more than once: {', '.join(twice)}")
        return header

    def _start(self) -> None:
        self.close()
        handle = self.path.open(encoding="utf-8-sig", errors="replace", newline="")
        self._handle = handle
        self._reader = csv.reader(handle, skipinitialspace=True)
        next(self._reader, None)  # the header
        self.passes += 1
        if self.passes > 1:
            log.info("replay looped", file=str(self.path), passes=self.passes)


class RowProbe:
    """A probe that returns the next usable row of a :class:`CsvRows` as a value.

    Rows without a usable value are skipped, logged and counted. A whole pass over a
    looping file without one usable row ends the sensor instead of spinning on it.
    """

    def __init__(self, rows: CsvRows, column: str | None) -> None:
        self.rows = rows
        self.column = column
        self._index = rows.header.index(column) if column is not None else None
        #: The fields of the row the last value came from.
        self.current: list[str] = []
        self.skipped = 0
        self._pass = rows.passes
        self._used_in_pass = 0

    def __call__(self) -> Value:
        while True:
            try:
                row = self.rows.next()
            except csv.Error as exc:
                self._skip(str(exc))
                continue
            if self.rows.passes != self._pass:
                if self._used_in_pass == 0:
                    log.warning("no usable row in a whole pass, stopping", file=str(self.rows.path))
                    raise StopProbing
                self._pass, self._used_in_pass = self.rows.passes, 0
            try:
                value = self._value(row)
            except ValueError as exc:
                self._skip(str(exc))
                continue
            self._used_in_pass += 1
            self.current = row
            return value

    def _value(self, row: list[str]) -> Value:
        if self._index is None:
            record: dict[str, JsonValue] = {}
            for name, cell in zip(self.rows.header, row, strict=False):
                number = parse_number(cell)
                record[name] = cell if number is None else number
            return record
        if self._index >= len(row):
            raise ValueError(f"the row has no column {self.column!r}")
        number = parse_number(row[self._index])
        if number is None:
            raise ValueError(f"column {self.column!r} is not a number: {row[self._index]!r}")
        return number

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        log.warning("row skipped", file=str(self.rows.path), line=self.rows.line, reason=reason)
