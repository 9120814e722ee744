"""Noise stages: what they drop, when, and how they chain and repeat."""

from __future__ import annotations

import itertools
import random

import pytest

from forkwire.client.sensors.noise import Chain, PeriodicDropout, RandomDrop, parse_noise


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_periodic_dropout_drops_one_element_per_drawn_interval() -> None:
    """dropout:2-3 drops the first element at or after each deadline, X uniform in [2, 3]."""
    clock = FakeClock()
    stage = PeriodicDropout(2.0, 3.0, rng=random.Random(7), clock=clock)
    dropped_at = []
    for step in range(1000):  # 10 s of elements every 10 ms
        clock.now = step / 100
        if not stage(step):
            dropped_at.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(dropped_at)]
    assert stage.dropped == len(dropped_at) in (3, 4)
    assert all(2.0 <= gap <= 3.01 for gap in gaps)
    assert 2.0 <= dropped_at[0] <= 3.01


def test_random_drop_extremes_and_rate() -> None:
    """p=0 keeps all, p=1 drops all, p=0.1 drops about a tenth, counting each drop."""
    assert all(RandomDrop(0.0)(i) for i in range(100))
    always = RandomDrop(1.0)
    assert not any(always(i) for i in range(100))
    assert always.dropped == 100
    sometimes = RandomDrop(0.1, rng=random.Random(1))
    kept = sum(sometimes(i) for i in range(10_000))
    assert 8_700 < kept < 9_300
    assert sometimes.dropped == 10_000 - kept


def test_chain_applies_stages_in_order_and_sums_drops() -> None:
    """A later stage never sees what an earlier one dropped; dropped is the total."""
    first, second = RandomDrop(0.5, rng=random.Random(2)), RandomDrop(0.5, rng=random.Random(3))
    chain = Chain([first, second])
    kept = sum(chain(i) for i in range(1000))
    assert chain.dropped == first.dropped + second.dropped == 1000 - kept
    assert second.dropped <= 1000 - first.dropped


def test_parse_noise_is_seeded_and_repeatable() -> None:
    """The same specs and seed drop the same elements; another seed drops others."""

    def pattern(seed: int) -> list[bool]:
        chain = parse_noise(["random:0.3", "random:0.2"], seed=seed)
        return [chain(i) for i in range(200)]

    assert pattern(5) == pattern(5)
    assert pattern(5) != pattern(6)


@pytest.mark.parametrize("spec", ["dropout", "dropout:x", "dropout:3-2", "random:2", "burst:1"])
def test_parse_noise_rejects_bad_specs(spec: str) -> None:
    """A malformed or unknown spec is a ValueError naming the spec."""
    with pytest.raises(ValueError, match="bad noise"):
        parse_noise([spec])
