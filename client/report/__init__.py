"""``forkwire report``: the server computes the analytics, this package draws them.

From a server (``report_from_server``): the report, then each sensor's series, page by
page, written as ``report.json``, ``filled.csv`` and ``report.png`` and shown as a table.
From a store (``report_from_store``): the same, asked of a server of our own started on
that store, so the numbers always come from the one implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from forkwire.client.connection import Connection
from forkwire.client.errors import InputError, MissingExtra, make_folder
from forkwire.client.local import local_server
from forkwire.client.report.fetch import (
    ReportFailed,
    ReportQuery,
    SensorSeries,
    fetch_report,
    fetch_series,
)
from forkwire.client.report.files import write_csv, write_json
from forkwire.client.report.plot import (
    PANELS_PER_PAGE,
    Page,
    plot_report,
    stale_pages,
    windowed_rate,
)
from forkwire.client.report.table import render_table
from forkwire.protocol import AnalyticsReport, FillMethod

__all__ = [
    "PANELS_PER_PAGE",
    "Page",
    "ReportFailed",
    "ReportOutcome",
    "ReportQuery",
    "SensorSeries",
    "plot_report",
    "render_table",
    "report_from_server",
    "report_from_store",
    "windowed_rate",
    "write_csv",
    "write_json",
    "write_report",
]


@dataclass(frozen=True)
class ReportOutcome:
    """The report, the files written, and notes (a file that could not be drawn)."""

    report: AnalyticsReport
    files: list[Path]
    notes: list[str] = field(default_factory=list)


#: Every sensor, all readings, linear filling.
EVERYTHING = ReportQuery()


async def report_from_server(
    host: str, port: int, out_dir: Path, query: ReportQuery = EVERYTHING
) -> ReportOutcome:
    """Ask the server at ``host:port`` and write the three files into ``out_dir``.

    Raises:
        ConnectError: the server cannot be reached.
        ReportFailed: it refused, or went away.
    """
    connection = await Connection.open(host, port, client="forkwire-report")
    async with connection:
        report = await fetch_report(connection, query)
        # A series is one producer's: a sensor's seqs count per producer, and readings sent
        # by a fleet (never anonymous) are not in the anonymous producer's series.
        series = [
            await fetch_series(connection, name, entry["kind"], query, producer=producer)
            for name, entry in report["sensors"].items()
            for producer in [p["producer"] for p in entry.get("producers", [])] or [""]
        ]
        await connection.goodbye()
    return await asyncio.to_thread(write_report, report, series, out_dir, query.fill)


def write_report(
    report: AnalyticsReport, series: Sequence[SensorSeries], out_dir: Path, fill: FillMethod
) -> ReportOutcome:
    """Write ``report.json``, ``filled.csv`` and (with the ``plot`` extra) ``report.png``,
    ``report-2.png``, ... (a page per ``PANELS_PER_PAGE`` sensors); returns them in order."""
    make_folder(out_dir, "report folder")
    files = [out_dir / "report.json", out_dir / "filled.csv"]
    notes = []
    try:
        write_json(report, files[0])
        write_csv(series, files[1])
        try:
            pages = plot_report(out_dir / "report.png", report, series, fill=fill)
            files += [page.path for page in pages]
            # A report-5.png left by a report on more sensors would read as part of this one.
            for stale in stale_pages(out_dir / "report.png", len(pages)):
                stale.unlink()
        except MissingExtra as exc:
            notes.append(f"report.png not drawn: {exc}")
        except (ValueError, ArithmeticError) as exc:
            # The numbers are in report.json and filled.csv whatever the plot makes of them.
            notes.append(f"report.png not drawn: {type(exc).__name__}: {exc}")
    except OSError as exc:
        raise InputError(f"cannot write {exc.filename or out_dir}: {exc.strerror or exc}") from None
    return ReportOutcome(report, files, notes)


async def report_from_store(
    url: str, out_dir: Path, query: ReportQuery = EVERYTHING
) -> ReportOutcome:
    """Start a server of our own on the store at ``url`` (no UDP, one worker) and ask it.

    Raises:
        InputError: the store is a file that does not exist (none is created).
        ServerFailed: that server did not start (a bad URL, an unreadable store).
        ReportFailed: it could not build the report.
    """
    _require_store(url)
    async with local_server("--db", url, "--no-udp", "--workers", "1") as server:
        return await report_from_server("127.0.0.1", server.port, out_dir, query)


def _require_store(url: str) -> None:
    """Refuse a file store that is not there: a report reads, it never creates a store.

    The server would create an empty one (and its folders) on start, and the report would
    then say, wrongly, that nothing was ever stored.

    Raises:
        InputError: the ``sqlite://`` or ``csv://`` file does not exist.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("sqlite", "csv"):
        return
    name = rest.removeprefix("/").partition("?")[0]
    if name and not Path(name).is_file():  # no name at all: the server's error says so
        raise InputError(f"no store at {name}: nothing to report (check --db)")
