"""The rate-limited log: a burst of one event is one line, then one per period with a count."""

from __future__ import annotations

import pytest
import structlog

from forkwire.server.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_burst_is_one_line_then_one_per_period_with_the_count(clock: Clock) -> None:
    limited = RateLimitedLog(structlog.get_logger("t"), every=10.0, clock=clock)
    with structlog.testing.capture_logs() as lines:
        assert limited.error("storage_failed", error="x")
        for _ in range(500):
            clock.now += 0.01
            assert not limited.error("storage_failed", error="x")
        clock.now += 10.0
        assert limited.error("storage_failed", error="y")
    assert [line["event"] for line in lines] == ["storage_failed", "storage_failed"]
    assert "suppressed" not in lines[0]
    assert lines[1]["suppressed"] == 500
    assert lines[1]["since_first_s"] == pytest.approx(15.0)
    assert lines[1]["log_level"] == "error"


def test_keys_are_counted_apart_and_bounded(clock: Clock) -> None:
    limited = RateLimitedLog(structlog.get_logger("t"), every=10.0, max_keys=3, clock=clock)
    with structlog.testing.capture_logs() as lines:
        for peer in ("a", "b", "a", "c", "d", "a"):
            limited.warning("frame_too_large", key=peer, peer=peer)
    # "a" is logged once; then forgotten (only three keys kept) after c and d came.
    assert [line["peer"] for line in lines] == ["a", "b", "c", "d", "a"]


def test_forget_ends_a_burst(clock: Clock) -> None:
    limited = RateLimitedLog(structlog.get_logger("t"), every=10.0, clock=clock)
    with structlog.testing.capture_logs() as records:
        limited.error("storage_failed")
        limited.error("storage_failed")
        assert limited.forget("storage_failed") == 1
        assert limited.error("storage_failed")
    assert len(records) == 2
