"""``forkwire report``: the analytics of stored streams, from the store or from the server.

With ``--db`` the store is read directly and all three files are written (``report.json``,
``filled.csv``, ``report.png``). This is the one place the client runs server code: the
report is built by ``server.report``'s public entry, imported on demand, the same
exception the design makes for the demo starting a server in process. Without ``--db``
the server is asked with a ``report`` request, so a remote user needs no database access;
it answers the JSON only, so only ``report.json`` is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forkwire.client.connection import Connection, ConnectionLost
from forkwire.protocol import Error, Report, ReportResult

FillMethod = Literal["linear", "previous", "none"]


class ReportFailed(Exception):
    """The report could not be produced; the message says why."""


@dataclass(frozen=True)
class ReportOutcome:
    """The report and the files written."""

    report: dict[str, Any]
    files: list[Path]


async def report_from_store(
    url: str,
    out_dir: Path,
    *,
    sensors: Sequence[str] | None = None,
    since: float | None = None,
    fill: FillMethod = "linear",
    max_gap: int | None = None,
) -> ReportOutcome:
    """Read the store at ``url`` and write the three report files into ``out_dir``.

    Raises:
        ReportFailed: the store cannot be opened or read, or the fill would be too large.
    """
    from forkwire.server.report import write_report  # the public entry; see the module docstring
    from forkwire.server.storage import open_repository

    try:
        repo = await open_repository(url)
    except (ValueError, OSError) as exc:
        raise ReportFailed(f"cannot open {url.split('://')[0]} store: {exc}") from None
    except Exception as exc:  # drivers raise their own types (asyncpg, sqlite3)
        raise ReportFailed(f"cannot open the store: {type(exc).__name__}: {exc}") from None
    try:
        rows = await repo.query(sensors, since)
    finally:
        await repo.close()
    try:
        paths = write_report(rows, out_dir, fill=fill, max_gap=max_gap)
    except ValueError as exc:
        raise ReportFailed(str(exc)) from None
    report = json.loads(paths.json.read_text(encoding="utf-8"))
    return ReportOutcome(report, [paths.json, paths.csv, paths.png])


async def report_from_server(
    host: str,
    port: int,
    *,
    sensors: Sequence[str] | None = None,
    since: float | None = None,
) -> dict[str, Any]:
    """Ask the server for the report JSON (write it with :func:`save_report`).

    Raises:
        ReportFailed: the server refused or went away.
    """
    connection = await Connection.open(host, port, client="forkwire-report")
    async with connection:
        try:
            reply = await connection.request(
                Report(sensors=list(sensors) if sensors else None, since=since)
            )
        except ConnectionLost as exc:
            raise ReportFailed(str(exc)) from None
        await connection.goodbye()
    if isinstance(reply, Error):
        raise ReportFailed(f"the server answered {reply.code}: {reply.message}")
    if not isinstance(reply, ReportResult):
        raise ReportFailed(f"the server answered {reply.type!r} to a report request")
    return dict(reply.report)


def save_report(report: dict[str, Any], out_dir: Path) -> ReportOutcome:
    """Write a report received from the server as ``report.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return ReportOutcome(report, [path])
