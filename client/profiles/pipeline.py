"""The profile pipeline: a generator, a processor and a sender, three processes at once.

* The **generator** makes a Faker profile every ``interval`` seconds on its own fixed-rate
  clock, whatever the others are doing, and hands it to the processor on a
  ``multiprocessing.Queue``; after ``count`` profiles (or on Ctrl-C) it puts ``None``
  there. That sentinel is the "generator done" signal: it travels behind the last
  profile, so the processor cannot see "done" while profiles are still in the queue (an
  ``Event`` beside the queue could be seen first).
* The **processor** computes each profile's age from its birthdate on today's date, keeps
  those within ``ages``, gives each kept profile the next seq of the ``profiles`` stream
  and appends it to the **spool** file. It rings a doorbell (a one-way ``Pipe``) after
  each append; the data itself travels only through the spool.
* The **sender** reads the spool, sends its records as ``readings`` frames to the server
  (sensor ``profiles``, the record as the value), and removes a record from the spool
  only once the server has acked it. A failed send (no server, a lost connection, an
  ``error`` frame, no ack in time) leaves the records where they are and retries after an
  exponential backoff with jitter. It prints ``sent: <name>, <sex>, <job>, <age>`` for
  each acked record, the age in words of the locale.

The parent starts the three, then shuts them down in order: it waits for the generator
(``count`` profiles made), then for the processor (its queue drained, the spool
written), then tells the sender to drain the spool within ``drain_timeout``; what it
could not send stays in the spool for the next run, and the summary says how much. On
Ctrl-C (the children ignore SIGINT; the parent decides) the generator stops early, the
processor still drains what was made, and the sender stops at once.

This module is the parent. The generator and the processor are in
:mod:`~forkwire.client.profiles.children`, the sender in
:mod:`~forkwire.client.profiles.sender`, and the spool file and the seq counter (their
formats, torn tails, why a resent record keeps its seq) in
:mod:`~forkwire.client.profiles.spool`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Mapping
from multiprocessing.connection import Connection as PipeEnd
from multiprocessing.connection import wait as wait_for_any
from typing import Any, Final

from forkwire.client.extras import require
from forkwire.client.logs import get_logger
from forkwire.client.profiles.children import generate, process
from forkwire.client.profiles.config import ProfilesConfig, ProfilesSummary
from forkwire.client.profiles.sender import send
from forkwire.client.profiles.spool import Spool, read_counter, spool_producer

log = get_logger("forkwire.profiles")

#: The three children live for the whole run, so spawn's start-up cost (tens of ms) is
#: paid three times; in exchange each starts from a clean interpreter, not a copy of ours.
START_METHOD: Final = "spawn"
#: How long the parent waits for a child beyond its own deadline before killing it.
_GRACE: Final = 15.0


def run_profiles(config: ProfilesConfig) -> ProfilesSummary:
    """Run the generator, the processor and the sender to the end; see the module docs.

    A first Ctrl-C stops the run in order (the summary is returned with ``interrupted``);
    a second one kills the children and raises ``KeyboardInterrupt``.

    Raises:
        MissingExtra: Faker (the ``profiles`` extra) is not installed.
        InputError: the spool or its seq counter cannot be used.

    Both are checked before any process starts.
    """
    # The generator imports Faker again; this is the check that it will find it.
    require("faker", "profiles", "forkwire profiles")
    spool = Spool(config.spool_path, config.format)
    resumed, cut = spool.repair()
    if cut:
        log.warning("cut a torn record off the spool", spool=str(spool.path), bytes=cut)
    first_seq = max(read_counter(config.seq_path), max((e["seq"] + 1 for e in resumed), default=0))
    # Made here, before any child, so the sender only ever reads it.
    spool_producer(config.producer_path, config.seq_path)
    if resumed:
        log.info("resuming the spool", records=len(resumed), spool=str(spool.path))

    ctx = multiprocessing.get_context(START_METHOD)
    lock = ctx.Lock()
    queue = ctx.Queue()
    stop = ctx.Event()
    bell_in, bell_out = ctx.Pipe(duplex=False)
    control_in, control_out = ctx.Pipe(duplex=False)
    results = {name: ctx.Pipe(duplex=False) for name in ("generator", "processor", "sender")}
    children = {
        "generator": ctx.Process(
            target=generate,
            args=(config, queue, stop, results["generator"][1]),
            name="profiles-generator",
        ),
        "processor": ctx.Process(
            target=process,
            args=(config, queue, lock, bell_out, first_seq, results["processor"][1]),
            name="profiles-processor",
        ),
        "sender": ctx.Process(
            target=send,
            args=(config, lock, bell_in, control_in, results["sender"][1]),
            name="profiles-sender",
        ),
    }
    interrupted = False
    try:
        for child in children.values():
            child.start()
        # Only the children use these ends; closing ours lets a reader see EOF when its
        # writer dies, and a writer see a broken pipe when its reader does.
        for end in (bell_in, bell_out, control_in, *(w for _, w in results.values())):
            end.close()
        try:
            _shut_down_in_order(config, children, queue, control_out, drain=True)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: stopping the generator and the sender")
            stop.set()
            _order(control_out, "stop")
            _shut_down_in_order(config, children, queue, control_out, drain=False)
    finally:
        for child in children.values():
            if child.is_alive():
                child.kill()
            if child.pid is not None:
                child.join()
        control_out.close()
        queue.close()
        queue.cancel_join_thread()  # a sentinel nobody read must not hold the parent up

    counts: dict[str, int] = {}
    for reader, _ in results.values():
        with contextlib.suppress(EOFError, OSError):
            if reader.poll():
                counts.update(reader.recv())
        reader.close()
    failed = tuple(
        f"{name} exited with {child.exitcode}"
        for name, child in children.items()
        if child.exitcode != 0
    )
    return ProfilesSummary(
        generated=counts.get("generated", 0),
        kept=counts.get("kept", 0),
        sent=counts.get("sent", 0),
        retried=counts.get("retried", 0),
        failures=counts.get("failures", 0),
        conflicts=counts.get("conflicts", 0),
        resumed=len(resumed),
        left=len(Spool(config.spool_path, config.format).load()),
        spool=config.spool_path,
        interrupted=interrupted,
        failed=failed,
    )


def _shut_down_in_order(
    config: ProfilesConfig,
    children: Mapping[str, multiprocessing.process.BaseProcess],
    queue: Any,
    control: PipeEnd,
    *,
    drain: bool,
) -> None:
    """Generator, then processor, then the sender's drain (or stop, on Ctrl-C)."""
    generator, processor, sender = children["generator"], children["processor"], children["sender"]
    wait_for_any([generator.sentinel, processor.sentinel])
    if generator.is_alive() and not processor.is_alive() and processor.exitcode != 0:
        # The processor died first: nobody reads the queue any more, and a generator
        # whose queue is full cannot even exit (its feeder thread waits to flush).
        log.error("the processor died; stopping the generator", code=processor.exitcode)
        generator.kill()
    generator.join()
    if generator.exitcode != 0 and processor.is_alive():
        queue.put(None)  # it died before its sentinel: the processor must still finish
    processor.join()
    if drain:
        _order(control, "drain")
    sender.join(config.drain_timeout + config.ack_timeout + _GRACE)


def _order(control: PipeEnd, order: str) -> None:
    with contextlib.suppress(OSError):
        control.send(order)
