"""``LOW-HIGH`` ranges as the commands take them: ``--interval 1-3``, ``--ages 30-40``,
``--noise dropout:2-3``.

One number means a range of one (``"5"`` is ``5-5``). Both ends are >= 0, so ``-`` is
never a sign.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def parse_range(text: str, name: str, number: Callable[[str], Number]) -> tuple[Number, Number]:
    """``"1-3"`` to ``(1, 3)`` and ``"5"`` to ``(5, 5)``, each end read by ``number``.

    Args:
        name: what the range is, for the message (``interval``, ``ages``).
        number: ``float``, or ``int`` for whole numbers.

    Raises:
        ValueError: not one number or two joined by ``-``, a negative or infinite end, or
            LOW above HIGH; the message names ``name`` and quotes ``text``.
    """
    low_text, sep, high_text = text.strip().partition("-")
    whole = " (whole numbers)" if number is int else ""
    try:
        low = number(low_text)
        high = number(high_text) if sep else low
    except ValueError:
        raise ValueError(f"{name} must be LOW-HIGH or one number{whole}, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
        raise ValueError(f"{name} must be 0 <= LOW <= HIGH, got {text!r}")
    return low, high
