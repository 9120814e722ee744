"""The demo's pure arithmetic: jitter, out-of-order, percentiles, loss attribution, rates.

No I/O and no event loop here, so the tests pin each function without a server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

#: An offered rate in readings per second, or ``"max"``: as fast as the sender can go.
Rate: TypeAlias = int | float | Literal["max"]

#: RFC 3550 section 6.4.1: the jitter estimate moves 1/16 of the way to each new |D|.
_JITTER_GAIN: Final = 1 / 16


def rfc3550_jitter(transits: Sequence[float]) -> float | None:
    """Interarrival jitter (RFC 3550, 6.4.1) of transit times given in arrival order.

    ``D`` is the difference of consecutive transit times and ``J += (|D| - J) / 16``,
    starting from 0. The result is in the unit of ``transits``; None with fewer than two.
    """
    if len(transits) < 2:
        return None
    jitter = 0.0
    previous = transits[0]
    for transit in transits[1:]:
        jitter += (abs(transit - previous) - jitter) * _JITTER_GAIN
        previous = transit
    return jitter


def count_out_of_order(seqs: Sequence[int]) -> int:
    """Readings that arrived after a reading with a higher seq (``seqs`` in arrival order)."""
    late = 0
    highest = -1
    for seq in seqs:
        if seq < highest:
            late += 1
        else:
            highest = seq
    return late


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating linearly between closest ranks.

    The same definition as numpy's default (``method="linear"``). None for no values.

    Raises:
        ValueError: ``q`` outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def attribute_loss(lost: int, noise: int, kernel: int | None) -> tuple[int, int, int]:
    """Split ``lost`` into (noise, kernel buffer, elsewhere), in that order of blame.

    The noise count is exact (the client dropped those itself); kernel drops are host-wide,
    so they are capped at what the noise does not explain; the rest is "elsewhere".
    """
    by_noise = min(max(noise, 0), max(lost, 0))
    by_kernel = min(max(kernel or 0, 0), max(lost - by_noise, 0))
    return by_noise, by_kernel, max(lost - by_noise - by_kernel, 0)


def parse_rates(text: str) -> tuple[Rate, ...]:
    """Parse ``"1000,5000,max"`` into rates, for a command line.

    Raises:
        ValueError: an empty list, or an item that is neither a positive number nor ``max``.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"no rates in {text!r}; give e.g. 1000,20000,max")
    rates: list[Rate] = []
    for item in items:
        if item.lower() == "max":
            rates.append("max")
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"bad rate {item!r}: give readings per second, or 'max'") from None
        rates.append(_normalise_rate(value))
    return tuple(rates)


def _normalise_rate(rate: object) -> Rate:
    if isinstance(rate, str) and rate.strip().lower() == "max":
        return "max"
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"bad rate {rate!r}: give readings per second, or 'max'")
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"bad rate {rate!r}: must be a positive, finite number of readings/s")
    return int(rate) if float(rate).is_integer() else float(rate)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
