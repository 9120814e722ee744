"""What the demo measures and where: :class:`DemoConfig`, its defaults, and the error."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from forkwire.client.connection import PLAIN, Credentials
from forkwire.client.demo.metrics import Rate, _normalise_rate
from forkwire.client.errors import ClientError
from forkwire.client.sensors.noise import parse_noise

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_RATES: Final[tuple[Rate, ...]] = (1000, 5000, 20_000, 50_000, 100_000, "max")
QUICK_RATES: Final[tuple[Rate, ...]] = (1000, 20_000, "max")
DEFAULT_COUNT: Final = 20_000
QUICK_COUNT: Final = 5_000
#: The original brief's noise: drop one reading every X seconds, X uniform in [2, 3].
DEFAULT_NOISE: Final = "dropout:2-3"
DEFAULT_NOISE_RATE: Final = 200.0
DEFAULT_NOISE_SECONDS: Final = 10.0
QUICK_NOISE_SECONDS: Final = 5.0
#: Readings per TCP ``readings`` frame.
DEFAULT_TCP_BATCH: Final = 100
#: Unacked TCP frames at once. The window must hold more readings than the server's
#: group-commit batch (1,000 by default): with fewer, no batch ever fills and every commit
#: waits out the commit interval, which caps TCP at window / interval readings per second.
DEFAULT_TCP_WINDOW: Final = 32
#: SO_RCVBUF the demo asks for its own server: the OS default (208 KiB on Linux) holds
#: about a tenth of a second of readings at 20,000/s.
DEFAULT_UDP_RCVBUF: Final = 4 * 1024 * 1024
REFERENCE_LABEL: Final = "kernel path, C receiver"


class DemoError(ClientError):
    """A run of the demo failed midway (acks timed out, the server refused readings)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"demo failed: {reason}")


@dataclass(frozen=True)
class DemoConfig:
    """What the demo measures and where.

    Args:
        host, port: an external server to measure. With ``port`` None (the default) the
            demo starts its own server subprocess on 127.0.0.1 with a SQLite store. ``host``
            defaults to 127.0.0.1 when only ``port`` is given.
        udp_port: the external server's UDP port (default: ``port``).
        credentials: the external server's token and TLS.
        rates: offered rates, readings/s or ``"max"`` (default: 1k, 5k, 20k, 50k, 100k, max;
            quick: 1k, 20k, max).
        count: readings per run (default 20,000; quick 5,000).
        quick: fewer rates, fewer readings, shorter noise runs (under a minute in all).
        out_dir: where ``demo.json`` and ``demo.png`` go (default: the current directory).
        seed: seeds the noise stage, so the noise runs draw the same intervals.
        noise: the noise spec of the extra pair of runs (the syntax of
            :mod:`forkwire.client.sensors.noise`); None skips them.
        noise_rate, noise_seconds: the pace and length of the noise runs (default 200/s
            for 10 s; quick 5 s).
        udp_rcvbuf: SO_RCVBUF for the demo's own server (default 4 MiB; the kernel may
            grant less, which the table's notes say).
        db_path: where the own server's SQLite file goes (default: a temporary file that is
            deleted at the end).
        tcp_batch, tcp_window: readings per TCP frame, unacked frames at once.
        iperf: run the iperf3 reference when ``iperf3`` is on PATH.
        settle_timeout: the longest wait, per run, for the server to store what it got.
        progress: called with one line per step.
        console: where the results table is printed (None: not printed).
    """

    host: str | None = None
    port: int | None = None
    udp_port: int | None = None
    #: What an external server asks for: its token, TLS (the demo's own server wants none).
    credentials: Credentials = PLAIN
    rates: Sequence[Rate] | None = None
    count: int | None = None
    quick: bool = False
    out_dir: Path | None = None
    seed: int = 0
    noise: str | None = DEFAULT_NOISE
    noise_rate: float = DEFAULT_NOISE_RATE
    noise_seconds: float | None = None
    udp_rcvbuf: int | None = None
    db_path: Path | None = None
    tcp_batch: int = DEFAULT_TCP_BATCH
    tcp_window: int = DEFAULT_TCP_WINDOW
    iperf: bool = True
    settle_timeout: float = 15.0
    progress: Callable[[str], None] | None = None
    console: Console | None = None

    def __post_init__(self) -> None:
        if self.host is not None and self.port is None:
            raise ValueError(
                "a host needs a port: give both to measure an external server, "
                "or neither to let the demo start its own"
            )
        for name in ("port", "udp_port"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 65535:
                raise ValueError(f"{name} must be in 1..65535, got {value}")
        if self.udp_port is not None and self.port is None:
            raise ValueError("udp_port applies to an external server only: give port too")
        if self.port is not None:
            for name in ("udp_rcvbuf", "db_path"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} applies to the demo's own server, not to host:port")
        if self.rates is not None:
            if isinstance(self.rates, str) or not self.rates:
                raise ValueError("rates must be a non-empty list of readings/s or 'max'")
            rates = tuple(_normalise_rate(rate) for rate in self.rates)
            if len(set(rates)) != len(rates):
                raise ValueError(f"rates must not repeat, got {list(rates)}")
            object.__setattr__(self, "rates", rates)
        if self.count is not None and not 1 <= self.count <= 10_000_000:
            raise ValueError(f"count must be in 1..10,000,000, got {self.count}")
        if self.noise is not None:
            parse_noise([self.noise], seed=self.seed)  # raises ValueError naming the spec
        if not (math.isfinite(self.noise_rate) and self.noise_rate > 0):
            raise ValueError(f"noise_rate must be a positive number, got {self.noise_rate}")
        if self.noise_seconds is not None and not (
            math.isfinite(self.noise_seconds) and self.noise_seconds > 0
        ):
            raise ValueError(f"noise_seconds must be positive, got {self.noise_seconds}")
        if self.udp_rcvbuf is not None and self.udp_rcvbuf < 1024:
            raise ValueError(f"udp_rcvbuf must be at least 1024 bytes, got {self.udp_rcvbuf}")
        if not 1 <= self.tcp_batch <= 10_000:
            raise ValueError(f"tcp_batch must be in 1..10,000, got {self.tcp_batch}")
        if self.tcp_window < 1:
            raise ValueError(f"tcp_window must be at least 1, got {self.tcp_window}")
        if not self.settle_timeout > 0:
            raise ValueError(f"settle_timeout must be positive, got {self.settle_timeout}")
        if self.out_dir is not None and self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"out_dir {self.out_dir} exists and is not a directory")

    @property
    def own_udp_rcvbuf(self) -> int:
        """SO_RCVBUF asked for the demo's own server."""
        return self.udp_rcvbuf or DEFAULT_UDP_RCVBUF

    @property
    def run_rates(self) -> tuple[Rate, ...]:
        """The rates measured."""
        if self.rates is not None:
            return tuple(self.rates)
        return QUICK_RATES if self.quick else DEFAULT_RATES

    @property
    def run_count(self) -> int:
        """Readings per rate run."""
        if self.count is not None:
            return self.count
        return QUICK_COUNT if self.quick else DEFAULT_COUNT

    @property
    def noise_count(self) -> int:
        """Readings per noise run."""
        seconds = self.noise_seconds
        if seconds is None:
            seconds = QUICK_NOISE_SECONDS if self.quick else DEFAULT_NOISE_SECONDS
        return max(1, round(self.noise_rate * seconds))
