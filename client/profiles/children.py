"""The generator and the processor processes, and what every child sets up first.

Top-level functions, as the spawn start method needs; see
:mod:`forkwire.client.profiles.pipeline` for how they meet.
"""

from __future__ import annotations

import signal
import time
from datetime import date, datetime
from decimal import Decimal
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from pydantic import JsonValue

from forkwire.client.extras import require
from forkwire.client.logs import configure_logging, get_logger
from forkwire.client.profiles.config import ProfilesConfig
from forkwire.client.profiles.spool import SeqCounter, Spool, SpoolEntry

log = get_logger("forkwire.profiles")


def age_on(birthdate: date, today: date) -> int:
    """Whole years from ``birthdate`` to ``today`` (a 29 February birthday turns on 1 March
    in other years)."""
    before_birthday = (today.month, today.day) < (birthdate.month, birthdate.day)
    return today.year - birthdate.year - before_birthday


def jsonable(value: object) -> JsonValue:
    """Faker's values as JSON: dates to ISO strings, ``Decimal`` to float, tuples to lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def child_setup(config: ProfilesConfig) -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(config.log_level)


def generate(config: ProfilesConfig, queue: Any, stop: Any, result: PipeEnd) -> None:
    """The generator process: ``count`` profiles, one every ``interval``, then ``None``."""
    child_setup(config)
    # Here, not at import: only this process needs it.
    faker = require("faker", "profiles", "forkwire profiles")
    fake = faker.Faker(config.locale)
    if config.seed is not None:
        fake.seed_instance(config.seed)
    made = 0
    started = time.monotonic()
    try:
        for i in range(config.count):
            # A fixed-rate clock of its own: profile i is due at start + i * interval,
            # however long the others take.
            delay = started + i * config.interval - time.monotonic()
            if stop.wait(delay) if delay > 0 else stop.is_set():
                log.info("generator stopped early", made=made)
                break
            queue.put((time.time(), jsonable(fake.profile())))
            made += 1
    finally:
        queue.put(None)
        result.send({"generated": made})
    log.info("generator done", generated=made)


def process(
    config: ProfilesConfig,
    queue: Any,
    lock: Any,
    doorbell: PipeEnd,
    first_seq: int,
    result: PipeEnd,
) -> None:
    """The processor process: keep the profiles in the age range, spool them with a seq."""
    child_setup(config)
    spool = Spool(config.spool_path, config.format, lock)
    counter = SeqCounter(config.seq_path, first_seq)
    low, high = config.ages
    received = kept = 0
    ringing = True
    try:
        while (item := queue.get()) is not None:
            received += 1
            ts, profile = item
            age = age_on(date.fromisoformat(profile["birthdate"]), date.today())
            if not low <= age <= high:
                continue
            spool.append(SpoolEntry(seq=counter.take(), ts=ts, profile={**profile, "age": age}))
            kept += 1
            if ringing:
                try:
                    doorbell.send_bytes(b"+")
                except OSError:
                    ringing = False  # the sender is gone; the spool keeps the records
    finally:
        result.send({"received": received, "kept": kept})
    log.info("processor done", received=received, kept=kept)
