"""The one retry backoff of the fleet and the profiles sender: doubling, jittered, bounded."""

from __future__ import annotations

import random

import pytest

from forkwire.client.backoff import Backoff


def test_delays_double_within_their_jitter_up_to_the_maximum() -> None:
    """The n-th delay lies in [c/2, c] with c = min(maximum, initial * 2**n)."""
    backoff = Backoff(0.1, 1.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_a_server_away_for_days_never_overflows() -> None:
    """Ten thousand failures in a row still give delays within the maximum (2**n would not)."""
    backoff = Backoff(0.1, 5.0)
    delays = [backoff.next_delay() for _ in range(10_000)]
    assert max(delays) <= 5.0
    assert min(delays[10:]) >= 2.5


def test_reset_starts_again_from_initial() -> None:
    """After a success the next delay is the first one again."""
    backoff = Backoff(1.0, 60.0)
    for _ in range(8):
        backoff.next_delay()
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_jitter_is_drawn_from_the_given_generator() -> None:
    """Two backoffs on equally seeded generators wait alike; the delays are not all equal."""
    first = Backoff(0.1, 5.0, rng=random.Random(3))
    second = Backoff(0.1, 5.0, rng=random.Random(3))
    delays = [first.next_delay() for _ in range(12)]
    assert delays == [second.next_delay() for _ in range(12)]
    assert len(set(delays[8:])) > 1


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_make_sense(initial: float, maximum: float) -> None:
    """A zero or negative start, or a start above the maximum, is refused."""
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(initial, maximum)


def test_the_servers_advice_sets_a_floor_with_jitter_above_it() -> None:
    """retry_after wins over a shorter delay, beyond the maximum too, spread by a quarter."""
    backoff = Backoff(0.05, 0.1, rng=random.Random(7))
    delays = [backoff.next_delay(at_least=2.0) for _ in range(200)]
    assert min(delays) >= 2.0
    assert max(delays) <= 2.5
    assert len({round(d, 3) for d in delays}) > 50  # not one burst
    assert backoff.next_delay(at_least=None) <= 0.1
