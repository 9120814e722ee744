"""The one LOW-HIGH parser behind --interval, --ages and the dropout noise spec."""

from __future__ import annotations

import pytest
from fwtest import run_cli

from forkwire.client.ranges import parse_range
from forkwire.client.sensors.noise import parse_noise


@pytest.mark.parametrize(
    ("text", "number", "expected"),
    [
        ("1-3", float, (1.0, 3.0)),
        ("0.5", float, (0.5, 0.5)),
        (" 2 - 3 ", float, (2.0, 3.0)),
        ("0", float, (0.0, 0.0)),
        ("30-40", int, (30, 40)),
        ("35", int, (35, 35)),
    ],
)
def test_one_number_or_two_joined_by_a_dash(text: str, number: type, expected: tuple) -> None:
    """LOW-HIGH gives both ends, one number gives a range of one, in the type asked for."""
    parsed = parse_range(text, "range", number)
    assert parsed == expected
    assert all(type(end) is number for end in parsed)


@pytest.mark.parametrize("text", ["x", "", "1-", "-1", "1-2-3", "1e-3", "2.5-3"])
def test_malformed_is_named_and_quoted(text: str) -> None:
    """Anything but one or two numbers (whole numbers for int) names the range and quotes it."""
    with pytest.raises(ValueError, match=r"^ages must be LOW-HIGH or one number \(whole numbers\)"):
        parse_range(text, "ages", int)


@pytest.mark.parametrize("text", ["3-1", "nan", "inf", "0-inf"])
def test_reversed_or_infinite_is_refused(text: str) -> None:
    """LOW above HIGH, NaN and infinity are refused with the 0 <= LOW <= HIGH rule."""
    with pytest.raises(ValueError, match=r"^interval must be 0 <= LOW <= HIGH, got "):
        parse_range(text, "interval", float)


def test_noise_specs_read_their_range_the_same_way() -> None:
    """dropout:LOW-HIGH goes through the same parser, so its errors read the same."""
    assert parse_noise(["dropout:2-3"]).stages[0].high == 3.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="bad noise 'dropout:3-2': dropout must be 0 <= LOW"):
        parse_noise(["dropout:3-2"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "missing.csv", "--interval", "3-1"], "interval must be 0 <= LOW <= HIGH"),
        (["profiles", "5", "--ages", "x"], "ages must be LOW-HIGH or one number"),
        (["sensors", "--noise", "dropout:x"], "bad noise 'dropout:x': dropout must be LOW-HIGH"),
    ],
    ids=["interval", "ages", "noise"],
)
def test_every_command_reports_a_bad_range_as_usage(args: list[str], message: str) -> None:
    """A bad range on any command is one line on stderr and exit status 2."""
    done = run_cli(*args, "--port", "1")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"forkwire: {message}")
    assert done.stderr.count("\n") == 1
