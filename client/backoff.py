"""Retry delays: exponential with jitter, for every client that reconnects or resends."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each drawn with jitter.

    The n-th delay after a success is uniform in ``[ceiling / 2, ceiling]`` with
    ``ceiling = min(maximum, initial * 2**n)``. Jitter keeps a fleet of clients from
    retrying in lockstep after a server restart; keeping half of the delay fixed keeps the
    backoff growing.

    Args:
        initial: the first ceiling, in seconds (> 0).
        maximum: the largest ceiling, in seconds (>= initial).
        rng: the source of the jitter (a seeded one repeats its delays).
    """

    def __init__(self, initial: float, maximum: float, *, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._ceiling = initial

    def next_delay(self, at_least: float | None = None) -> float:
        """The delay before the next retry; each call after a failure waits longer.

        ``at_least``: the server's advice (``retry_after``). The delay is then at least
        that, drawn up to a quarter more so a fleet told the same does not come back in
        one burst; the advice is not capped by ``maximum`` (the server knows its outage).
        """
        ceiling = self._ceiling
        # Doubling stops at the maximum, so a server away for days never overflows a float.
        self._ceiling = min(self.maximum, ceiling * 2)
        delay = self._rng.uniform(ceiling / 2, ceiling)
        if at_least is not None and at_least > 0:
            delay = max(delay, self._rng.uniform(at_least, at_least * 1.25))
        return delay

    def reset(self) -> None:
        """Start from ``initial`` again (the last attempt succeeded)."""
        self._ceiling = self.initial
