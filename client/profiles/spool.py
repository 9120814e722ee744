"""The spool of ``forkwire profiles``: kept profiles in a file until the server acks them.

The file. ``json``: one JSON object per line. ``pickle``: one pickle after another
(only ever read back by this program: unpickling runs code, so never point it at a file
you did not write). Each record is ``{"seq", "ts", "profile"}``. Every access holds one
``multiprocessing.Lock``. An append is a single ``write()`` of a whole record to a file
opened for appending; a removal writes the remaining records to ``<spool>.tmp`` and
``os.replace()``\\s it over the spool, so a reader sees the file before or after, never
half. A crash in the middle of an append can at worst leave a torn last record: the next
run cuts it off (and reports the bytes) before anything is appended behind it. Like the
fleet's outbox, this survives the death of the process, not a power cut (no fsync). One
run per spool at a time.

Producer. The server keeps a ``(sensor, producer, seq)`` once. A spool is one producer,
like the fleet's outbox: its id is made with the spool and kept in ``<spool>.producer``,
so a fresh spool (another machine, a wiped directory) is a new stream, stored in full,
not mistaken for the old one's duplicates. A spool whose seq counter predates producer ids
stays the anonymous producer, since its records may have been sent under it already.

Seqs. The ``profiles`` stream's seqs must be unique across the spool's runs. The
processor assigns a seq when a record enters the spool and stores it in the record, so a
resent record keeps its seq. The counter lives in ``<spool>.seq`` and is advanced
*before* the record is appended: a crash in between costs a gap, never a reused seq. At
start the counter is also raised above every seq still in the spool.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypedDict, get_args

from pydantic import JsonValue

from forkwire.client.errors import InputError

SpoolFormat = Literal["json", "pickle"]
FORMATS: Final[tuple[str, ...]] = get_args(SpoolFormat)


class SpoolEntry(TypedDict):
    """One record of the spool."""

    seq: int
    ts: float
    profile: dict[str, JsonValue]


class _Lock(Protocol):
    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> object: ...


class Spool:
    """The processor-to-sender channel: kept profiles in a file until the server acks them.

    Args:
        path: the spool file (created on the first append).
        format: ``json`` (a JSON object per line) or ``pickle`` (pickles back to back).
        lock: held around every access; shared by every process using the file.
    """

    def __init__(self, path: Path, format: SpoolFormat, lock: _Lock | None = None) -> None:
        self.path = path
        self.format = format
        self._lock: _Lock = lock if lock is not None else contextlib.nullcontext()

    def append(self, entry: SpoolEntry) -> None:
        """Add one record at the end, in one write."""
        data = self._encode(entry)
        with self._lock, self.path.open("ab") as handle:
            handle.write(data)

    def load(self) -> list[SpoolEntry]:
        """Every record, oldest first.

        Raises:
            InputError: the file is not a spool of this format.
        """
        with self._lock:
            data = self._read()
        entries, end = self._decode(data)
        if end != len(data):
            raise InputError(f"{self.path} ends in a torn record")
        return entries

    def remove(self, seqs: set[int]) -> int:
        """Delete the records with these seqs; return how many were deleted."""
        with self._lock:
            entries, _ = self._decode(self._read())
            kept = [entry for entry in entries if entry["seq"] not in seqs]
            if len(kept) != len(entries):
                self._rewrite(kept)
        return len(entries) - len(kept)

    def repair(self) -> tuple[list[SpoolEntry], int]:
        """Read the spool at start-up, cutting off a torn last record.

        Returns the records and the bytes cut (0 for a sound file).

        Raises:
            InputError: the file cannot be read, or is not a spool of this format.
        """
        with self._lock:
            try:
                data = self._read()
            except OSError as exc:
                raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
            entries, end = self._decode(data)
            if end != len(data):
                self._rewrite(entries)
        return entries, len(data) - end

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def _rewrite(self, entries: list[SpoolEntry]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_bytes(b"".join(self._encode(entry) for entry in entries))
        os.replace(temporary, self.path)

    def _encode(self, entry: SpoolEntry) -> bytes:
        if self.format == "json":
            text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode() + b"\n"
        return pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)

    def _decode(self, data: bytes) -> tuple[list[SpoolEntry], int]:
        """The records in ``data`` and the offset where the sound part ends."""
        if self.format == "json":
            return self._decode_json(data)
        return self._decode_pickle(data)

    def _decode_json(self, data: bytes) -> tuple[list[SpoolEntry], int]:
        entries: list[SpoolEntry] = []
        start = 0
        while start < len(data):
            stop = data.find(b"\n", start)
            if stop < 0:
                return entries, start  # a torn last line (a whole one ends in "\n")
            try:
                entries.append(_check_entry(json.loads(data[start:stop])))
            except ValueError:
                line = data.count(b"\n", 0, start) + 1
                raise InputError(f"{self.path} line {line} is not a JSON spool record") from None
            start = stop + 1
        return entries, start

    def _decode_pickle(self, data: bytes) -> tuple[list[SpoolEntry], int]:
        entries: list[SpoolEntry] = []
        stream = io.BytesIO(data)
        end = 0
        while end < len(data):
            try:
                loaded = pickle.load(stream)
            except Exception:
                # Pickles carry no length, so a torn last record and a damaged one look
                # alike; only a file that starts badly is plainly not a pickle spool.
                if not entries:
                    raise InputError(f"{self.path} is not a pickle spool") from None
                return entries, end
            try:
                entries.append(_check_entry(loaded))
            except ValueError:
                raise InputError(f"{self.path} holds a record that is not a profile") from None
            end = stream.tell()
        return entries, end


def _check_entry(obj: Any) -> SpoolEntry:
    if (
        isinstance(obj, dict)
        and isinstance(obj.get("seq"), int)
        and obj["seq"] >= 0
        and isinstance(obj.get("ts"), int | float)
        and isinstance(obj.get("profile"), dict)
    ):
        return SpoolEntry(seq=obj["seq"], ts=float(obj["ts"]), profile=obj["profile"])
    raise ValueError("not a spool record")


class SeqCounter:
    """The next seq of the ``profiles`` stream, saved in a file before each use.

    Args:
        path: the counter file (the next seq, as text).
        floor: the lowest seq to give (one above the spool's highest).

    Raises:
        InputError: the file exists but does not hold a count.
    """

    def __init__(self, path: Path, floor: int = 0) -> None:
        self.path = path
        self.next = max(read_counter(path), floor)

    def take(self) -> int:
        """Reserve and return the next seq; it is on disk before it is returned."""
        seq = self.next
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(f"{seq + 1}\n", encoding="ascii")
        os.replace(temporary, self.path)
        self.next = seq + 1
        return seq


def spool_producer(path: Path, seq_path: Path) -> str:
    """The producer id kept in ``path``, made and saved the first time ("" is anonymous).

    Raises:
        InputError: the file cannot be read or written, or does not hold an id.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the producer id {path}: {exc}") from None
    else:
        if text and not (len(text) == 32 and all(c in "0123456789abcdef" for c in text)):
            raise InputError(f"{path} should hold a producer id, holds {text[:40]!r}")
        return text
    # A counter that has moved: records may have gone out as the anonymous producer.
    producer = "" if read_counter(seq_path) > 0 else uuid.uuid4().hex
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(f"{producer}\n", encoding="ascii")
        os.replace(temporary, path)
    except OSError as exc:
        raise InputError(f"cannot write the producer id {path}: {exc.strerror or exc}") from None
    return producer


def read_counter(path: Path) -> int:
    """The seq counter in ``path``, 0 if there is none.

    Raises:
        InputError: unreadable, or not a whole number >= 0.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the seq counter {path}: {exc}") from None
    if not text.isdigit():
        raise InputError(f"{path} should hold the next seq, holds {text[:40]!r}")
    return int(text)
