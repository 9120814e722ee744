"""Noise: composable stages between a sensor's probe and the network.

A stage is a small callable that looks at an element and says whether it goes on
(``True``) or is dropped (``False``). Stages chain, each sees only what the previous kept,
and each counts what it dropped, so a demo can attribute every missing reading. They are
seeded, so a run can be repeated exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from forkwire.client.ranges import parse_range


class NoiseStage(Protocol):
    """Decides, element by element, what reaches the network."""

    dropped: int

    def __call__(self, element: object) -> bool: ...


@dataclass
class RandomDrop:
    """Drops each element with probability ``p``."""

    p: float
    rng: random.Random = field(default_factory=random.Random)
    dropped: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {self.p}")

    def __call__(self, element: object) -> bool:
        if self.rng.random() < self.p:
            self.dropped += 1
            return False
        return True


@dataclass
class PeriodicDropout:
    """Drops one element every X seconds, X uniform in [low, high], drawn again after each drop.

    The first element at or after the deadline is the one dropped: the noise in the
    original brief ("randomly drop elements every X seconds where X is in [2, 3]").
    """

    low: float
    high: float
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    dropped: int = 0
    _deadline: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"dropout interval must satisfy 0 < low <= high, got {self}")

    def __call__(self, element: object) -> bool:
        now = self.clock()
        if self._deadline is None:
            self._deadline = now + self.rng.uniform(self.low, self.high)
        if now < self._deadline:
            return True
        self.dropped += 1
        self._deadline = now + self.rng.uniform(self.low, self.high)
        return False


@dataclass
class Chain:
    """Stages applied in order; an element goes on only if every stage keeps it."""

    stages: Sequence[NoiseStage]

    @property
    def dropped(self) -> int:
        """Elements dropped by any stage."""
        return sum(stage.dropped for stage in self.stages)

    def __call__(self, element: object) -> bool:
        return all(stage(element) for stage in self.stages)


def parse_noise(specs: Sequence[str], *, seed: int | None = None) -> Chain:
    """Build a chain from specs like ``dropout:2-3`` and ``random:0.05``.

    Each stage gets its own generator derived from ``seed``, so adding a stage does not
    change what the others drop.

    Raises:
        ValueError: an unknown kind or a malformed parameter, with the spec in the message.
    """
    base = random.Random(seed)
    stages: list[NoiseStage] = []
    for spec in specs:
        kind, _, arg = spec.partition(":")
        rng = random.Random(base.getrandbits(64))
        try:
            if kind == "dropout":
                low, high = parse_range(arg, "dropout", float)
                stages.append(PeriodicDropout(low, high, rng=rng))
            elif kind == "random":
                stages.append(RandomDrop(float(arg), rng=rng))
            else:
                raise ValueError(f"unknown kind {kind!r}; use dropout:LOW-HIGH or random:P")
        except ValueError as exc:
            raise ValueError(f"bad noise {spec!r}: {exc}") from None
    return Chain(stages)
