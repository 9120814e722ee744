"""``forkwire calc FILE``: every line evaluated on the server, the answers in input order."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Annotated, TextIO

import typer

from forkwire.client.calc.opsfile import opened_lines
from forkwire.client.calc.run import DEFAULT_BATCH, CalcOptions, calc_file
from forkwire.client.cli.app import Server, Stopped, command, run, stoppable, transport_option
from forkwire.client.errors import InputError
from forkwire.client.transport import Transport
from forkwire.client.udp import DEFAULT_DATAGRAM


@command(connect_hint="is forkwire-server running?")
def calc(
    *,
    file: Annotated[
        str,
        typer.Argument(help="Expressions, one per line (text or .7z); - for standard input."),
    ],
    out: Annotated[
        str,
        typer.Option("-o", "--out", help="Results file, one line per input line; - for stdout."),
    ] = "results.txt",
    server: Server,
    batch: Annotated[int, typer.Option(min=1, help="Lines per job (at most).")] = DEFAULT_BATCH,
    window: Annotated[int, typer.Option(min=1, help="Jobs in flight at once.")] = 8,
    connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="TCP: connections to spread the jobs over (behind a balancer, over "
            "servers); a job whose connection is lost is sent again on another. "
            "Default: as many as keep the server's workers busy (its welcome says how "
            "many jobs of one connection it runs at once).",
            show_default=False,
        ),
    ] = None,
    transport: Annotated[
        Transport, transport_option("jobs sized to one datagram, retried")
    ] = Transport.tcp,
    datagram: Annotated[
        int, typer.Option(min=256, max=65_507, help="UDP: largest datagram in bytes.")
    ] = DEFAULT_DATAGRAM,
    progress: Annotated[
        bool | None, typer.Option(help="Progress bar (default: on a terminal).")
    ] = None,
) -> None:
    """Evaluate every line of FILE on the server; write the results in input order."""
    options = CalcOptions(
        server.host,
        server.port,
        batch,
        window,
        transport,
        datagram,
        connections,
        credentials=server.credentials,
    )
    show = sys.stderr.isatty() if progress is None else progress
    written = 0

    def count(lines: int, chars: int) -> None:
        nonlocal written
        written += lines
        if tick is not None:
            tick(lines, chars)

    stopped = Stopped()
    try:
        with (
            opened_lines(file) as (text, size),
            _output(out) as results,
            _progress(show, size) as tick,
        ):
            summary = run(stoppable(calc_file(text, results, options, on_written=count), stopped))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # The results written so far are closed and complete up to a line: say how far.
        where = "stdout" if out == "-" else out
        raise stopped.interrupted(
            f"{where} is incomplete: it holds the results of the first {written:,} lines"
        ) from None
    udp = (
        f", {summary.retries} retries, {summary.given_up} jobs given up"
        if transport is Transport.udp
        else ""
    )
    typer.echo(
        f"{summary.lines} lines, {summary.errors} errors, {summary.jobs} jobs{udp}, "
        f"{summary.seconds:.2f} s, {summary.rate:,.0f} lines/s"
        + ("" if out == "-" else f" -> {out}"),
        err=out == "-",
    )


@contextlib.contextmanager
def _progress(show: bool, total: int | None) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar over the input's characters, with lines/s; None when hidden.

    A stream has no size: the bar then shows the count and rate without a percentage."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]:>10,.0f} lines/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("calc", total=total, rate=0.0)
        started = time.perf_counter()
        written = 0

        def tick(count: int, chars: int) -> None:
            nonlocal written
            written += count
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=chars, rate=written / elapsed)

        yield tick


@contextlib.contextmanager
def _output(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdout
        return
    try:
        handle = open(name, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot write {name}: {exc.strerror or exc}") from None
    with handle:
        yield handle
