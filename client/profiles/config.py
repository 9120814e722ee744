"""What ``forkwire profiles`` generates, keeps and sends, and how a run went."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from forkwire.client.connection import DEFAULT_HOST, PLAIN, Credentials
from forkwire.client.profiles.spool import FORMATS, SpoolFormat
from forkwire.protocol import DEFAULT_PORT

LOCALES: Final = ("en_US", "ru_RU")
#: The stream the profiles go to.
SENSOR: Final = "profiles"
#: A frame of this many records stays far below the server's 1 MiB max_frame (a profile
#: is about 600 bytes of JSON).
DEFAULT_BATCH: Final = 100


@dataclass(frozen=True, slots=True)
class ProfilesConfig:
    """What to generate, what to keep, where to send it.

    Args:
        count: profiles to generate (>= 1).
        interval: seconds between generated profiles (0: as fast as Faker goes).
        spool: the spool file; None: ``profiles-spool.jsonl`` or ``.pickle``.
        format: ``json`` or ``pickle`` (see :mod:`forkwire.client.profiles.spool`).
        locale: Faker's locale, also the language of the printed ages.
        ages: keep profiles whose age is in ``[low, high]``.
        drain_timeout: once the processor is done, how long the sender may take to
            empty the spool.
        batch: most records per ``readings`` frame.
        backoff_initial, backoff_max: retry delays after a failed send (see
            :class:`forkwire.client.backoff.Backoff`).
        connect_timeout, ack_timeout: a connection attempt, and the wait for an ack.
        seed: seeds Faker (the same profiles every run).
        log_level: the children's log level (they log to stderr, as the parent does).
    """

    count: int
    interval: float = 0.5
    spool: Path | None = None
    format: SpoolFormat = "json"
    locale: str = "en_US"
    ages: tuple[int, int] = (30, 40)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: The token and TLS the server asks for.
    credentials: Credentials = PLAIN
    drain_timeout: float = 30.0
    batch: int = DEFAULT_BATCH
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    connect_timeout: float = 5.0
    ack_timeout: float = 10.0
    seed: int | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"count must be an int >= 1, got {self.count!r}")
        if not (math.isfinite(self.interval) and self.interval >= 0):
            raise ValueError(f"interval must be >= 0, got {self.interval}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {self.locale!r}")
        low, high = self.ages
        if not 0 <= low <= high:
            raise ValueError(f"ages must be 0 <= low <= high, got {low}-{high}")
        if not self.drain_timeout >= 0:
            raise ValueError(f"drain_timeout must be >= 0, got {self.drain_timeout}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")

    @property
    def spool_path(self) -> Path:
        """The spool file."""
        if self.spool is not None:
            return self.spool
        return Path("profiles-spool.jsonl" if self.format == "json" else "profiles-spool.pickle")

    @property
    def producer_path(self) -> Path:
        """The producer id beside the spool."""
        return self.spool_path.with_name(self.spool_path.name + ".producer")

    @property
    def seq_path(self) -> Path:
        """The seq counter beside the spool."""
        return self.spool_path.with_name(self.spool_path.name + ".seq")


@dataclass(frozen=True, slots=True)
class ProfilesSummary:
    """How a run went.

    ``sent`` records were acked by the server and removed from the spool (including any
    ``resumed`` from an earlier run's spool); ``retried`` records had at least one failed
    send, over ``failures`` failed attempts; ``conflicts`` were refused because the server
    holds their key with another value, and dropped; ``left`` are still in the spool.
    ``failed`` names children that did not end cleanly.
    """

    generated: int
    kept: int
    sent: int
    retried: int
    failures: int
    resumed: int
    left: int
    spool: Path
    conflicts: int = 0
    interrupted: bool = False
    failed: tuple[str, ...] = ()
