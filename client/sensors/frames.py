"""The frames a fleet has sent and the server has not answered yet.

One network slot is one frame, and a frame carries up to ``--batch`` readings. The server
answers each ``readings`` frame with one reply that names its readings: an ``ack`` lists
exactly the frame's keys as runs of seqs, a ``conflict`` error names the refused ones. So
a reply is matched to its frame by those keys, whatever order replies come in.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from forkwire.protocol import Reading

Runs: TypeAlias = dict[str, list[tuple[int, int]]]
_Signature: TypeAlias = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]

#: Ack latencies kept for the percentiles (the most recent ones).
LATENCY_SAMPLES: Final = 10_000


def runs_of(readings: Iterable[Reading]) -> Runs:
    """Inclusive runs of consecutive seqs per sensor, as an ack names them."""
    seqs: dict[str, list[int]] = {}
    for reading in readings:
        seqs.setdefault(reading.sensor, []).append(reading.seq)
    runs: Runs = {}
    for sensor, values in seqs.items():
        values.sort()
        found: list[tuple[int, int]] = []
        first = last = values[0]
        for seq in values[1:]:
            if seq > last + 1:
                found.append((first, last))
                first = seq
            last = seq
        found.append((first, last))
        runs[sensor] = found
    return runs


def _signature(runs: Mapping[str, Sequence[tuple[int, int]]]) -> _Signature:
    return tuple(
        sorted(
            (sensor, tuple((first, last) for first, last in pairs))
            for sensor, pairs in runs.items()
        )
    )


@dataclass(eq=False)
class Frame:
    """One ``readings`` frame in flight, and the outbox ids of its readings."""

    readings: list[Reading]
    ids: list[int]
    signature: _Signature = ()

    def __post_init__(self) -> None:
        self.signature = _signature(runs_of(self.readings))


class InFlight:
    """Frames sent and not yet answered, found again by the keys a reply names."""

    def __init__(self) -> None:
        self._frames: dict[_Signature, Frame] = {}
        self._by_key: dict[tuple[str, int], _Signature] = {}
        #: Seconds from each reading's probe (its ts) to its ack, the most recent kept: the
        #: latency a user of the readings sees, time in the outbox included.
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: Frame) -> None:
        """A frame was sent."""
        self._frames[frame.signature] = frame
        for reading in frame.readings:
            self._by_key[(reading.sensor, reading.seq)] = frame.signature

    def acked(self, runs: Mapping[str, Sequence[tuple[int, int]]]) -> Frame | None:
        """The frame an ack answers (None: none in flight, e.g. a resend acked twice)."""
        frame = self._frames.get(_signature(runs))
        if frame is not None:
            self._remove(frame)
            now = time.time()
            self.latencies.extend(now - reading.ts for reading in frame.readings)
        return frame

    def refused(self, runs: Mapping[str, Sequence[tuple[int, int]]]) -> Frame | None:
        """The frame holding the readings an error names."""
        for sensor, pairs in runs.items():
            for first, _ in pairs:
                signature = self._by_key.get((sensor, first))
                if signature is not None:
                    frame = self._frames[signature]
                    self._remove(frame)
                    return frame
        return None

    def clear(self) -> None:
        """The connection is gone: nothing is in flight any more."""
        self._frames.clear()
        self._by_key.clear()

    def percentile_ms(self, q: float) -> float | None:
        """The q-th percentile of the recent ack latencies, in milliseconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def _remove(self, frame: Frame) -> None:
        self._frames.pop(frame.signature, None)
        for reading in frame.readings:
            self._by_key.pop((reading.sensor, reading.seq), None)
