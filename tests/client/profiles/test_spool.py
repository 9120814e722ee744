"""The profiles spool and its seq counter: real files, both formats, torn tails."""

from __future__ import annotations

import pickle
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from forkwire.client.errors import InputError
from forkwire.client.profiles.children import jsonable
from forkwire.client.profiles.spool import SeqCounter, Spool, SpoolEntry, spool_producer


def entry(seq: int) -> SpoolEntry:
    """A spool record with a Faker-like profile (dates and decimals made JSON-able)."""
    from decimal import Decimal

    profile = jsonable(
        {"name": f"P {seq}", "birthdate": date(1990, 1, 1), "loc": (Decimal("1.5"),)}
    )
    assert isinstance(profile, dict)
    return SpoolEntry(seq=seq, ts=1.5, profile=profile)


@pytest.mark.parametrize("fmt", ["json", "pickle"])
def test_spool_appends_removes_and_cuts_a_torn_tail(tmp_path: Path, fmt: Any) -> None:
    """Records come back in order; remove() deletes only the named seqs; a torn last
    record (a crash mid-append) is cut off at start-up and later appends read fine."""
    path = tmp_path / "spool"
    spool = Spool(path, fmt)
    for seq in range(4):
        spool.append(entry(seq))
    assert [e["seq"] for e in spool.load()] == [0, 1, 2, 3]
    assert spool.load()[0]["profile"] == {"name": "P 0", "birthdate": "1990-01-01", "loc": [1.5]}
    assert spool.remove({1, 3, 99}) == 2
    assert [e["seq"] for e in spool.load()] == [0, 2]

    whole = path.read_bytes()
    torn = spool._encode(entry(7))[:-3]  # the record being appended when the crash came
    path.write_bytes(whole + torn)
    entries, cut = spool.repair()
    assert ([e["seq"] for e in entries], cut) == ([0, 2], len(torn))
    assert path.read_bytes() == whole
    spool.append(entry(8))
    assert [e["seq"] for e in spool.load()] == [0, 2, 8]


def test_spool_refuses_a_file_of_the_other_format(tmp_path: Path) -> None:
    """A JSON spool read as pickles (or the reverse) is an error, never truncated."""
    path = tmp_path / "spool"
    Spool(path, "json").append(entry(0))
    before = path.read_bytes()
    with pytest.raises(InputError, match="not a pickle spool"):
        Spool(path, "pickle").repair()
    assert path.read_bytes() == before
    path.write_bytes(pickle.dumps(entry(0)) + b"\n")
    with pytest.raises(InputError, match="not a JSON spool record"):
        Spool(path, "json").repair()


def test_seq_counter_is_saved_before_use(tmp_path: Path) -> None:
    """take() writes the next seq first, so a new counter on the file continues from it."""
    path = tmp_path / "spool.seq"
    counter = SeqCounter(path)
    assert [counter.take(), counter.take()] == [0, 1]
    assert path.read_text().strip() == "2"
    assert SeqCounter(path).take() == 2
    assert SeqCounter(path, floor=10).take() == 10
    path.write_text("garbage")
    with pytest.raises(InputError, match="next seq"):
        SeqCounter(path)


def test_a_spool_is_a_producer_for_life(tmp_path: Path) -> None:
    """A new spool makes a producer id and keeps it; a spool whose counter has moved
    (from before producer ids) stays anonymous; a file of garbage is refused."""
    path, seqs = tmp_path / "spool.jsonl.producer", tmp_path / "spool.jsonl.seq"
    first = spool_producer(path, seqs)
    assert len(first) == 32
    assert spool_producer(path, seqs) == first
    old, old_seqs = tmp_path / "old.producer", tmp_path / "old.seq"
    old_seqs.write_text("7\n")
    assert spool_producer(old, old_seqs) == ""
    assert spool_producer(old, old_seqs) == ""  # kept: it does not turn into a new id later
    assert old.read_text() == "\n"
    path.write_text("not an id")
    with pytest.raises(InputError, match="should hold a producer id"):
        spool_producer(path, seqs)
