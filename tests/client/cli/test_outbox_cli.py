"""``forkwire outbox``: what an outbox holds, and emptying it."""

from __future__ import annotations

from pathlib import Path

from fwtest import run_cli

from forkwire.client.sensors.outbox import Outbox
from forkwire.protocol import Reading


def filled(path: Path) -> str:
    """An outbox with three readings of a and one of b; returns its producer id."""
    with Outbox(path) as outbox:
        for seq in range(3):
            outbox.add(Reading(sensor="a", seq=seq, ts=1_700_000_000.0 + seq, value=seq))
        outbox.add(Reading(sensor="b", seq=0, ts=1_700_000_100.0, value=1))
        return outbox.producer


def test_outbox_shows_its_producer_and_what_waits(tmp_path: Path) -> None:
    """The table counts the readings waiting per sensor; the producer id and oldest follow."""
    path = tmp_path / "ob.sqlite"
    producer = filled(path)
    done = run_cli("outbox", str(path))
    assert done.returncode == 0, done.stderr
    assert f"producer {producer}" in done.stdout
    assert "oldest reading waiting: 2023-11-14 22:13:20 UTC" in done.stdout
    rows = {
        line.split()[1]: line.split()[3]
        for line in done.stdout.splitlines()
        if "│ a " in line or "│ b " in line
    }
    assert rows == {"a": "3", "b": "1"}


def test_purge_with_yes_empties_it_and_keeps_the_producer(tmp_path: Path) -> None:
    """--purge --yes deletes what waits; the producer and the seqs stay."""
    path = tmp_path / "ob.sqlite"
    producer = filled(path)
    done = run_cli("outbox", str(path), "--purge", "--yes")
    assert done.returncode == 0, done.stderr
    assert "purged 4 readings" in done.stdout
    with Outbox(path) as outbox:
        assert (len(outbox), outbox.producer) == (0, producer)
        assert outbox.next_seq("a") == 3


def test_purge_asks_first_and_no_keeps_everything(tmp_path: Path) -> None:
    """Without --yes, purge asks; answering no changes nothing and exits 1."""
    path = tmp_path / "ob.sqlite"
    filled(path)
    done = run_cli("outbox", str(path), "--purge", input="n\n")
    assert done.returncode == 1
    with Outbox(path) as outbox:
        assert len(outbox) == 4


def test_a_missing_outbox_is_one_line_and_status_2(tmp_path: Path) -> None:
    """Looking at an outbox that is not there creates nothing."""
    done = run_cli("outbox", str(tmp_path / "none.sqlite"))
    assert done.returncode == 2
    assert done.stderr == f"forkwire: no outbox at {tmp_path / 'none.sqlite'}\n"
    assert not (tmp_path / "none.sqlite").exists()
