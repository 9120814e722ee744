"""``forkwire report``: the stored streams' analytics as a table, JSON, CSV and a plot."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from forkwire.client.cli.app import Server, command, run, stdout


class Fill(enum.StrEnum):
    """How report gaps are filled."""

    linear = "linear"
    previous = "previous"
    none = "none"


@command(connect_hint="or pass --db to read the store directly")
def report(
    *,
    db: Annotated[
        str | None,
        typer.Option(
            help="Read this store directly (sqlite:///PATH, postgresql://...); "
            "without it, ask the server."
        ),
    ] = None,
    sensor: Annotated[
        list[str] | None, typer.Option("--sensor", help="Only this sensor (repeatable).")
    ] = None,
    since: Annotated[float | None, typer.Option(help="Only readings with ts >= this.")] = None,
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Folder for report.json, filled.csv, report.png.")
    ] = (Path("report")),
    fill: Annotated[Fill, typer.Option(help="Gap filling for filled.csv and the plot.")] = (
        Fill.linear
    ),
    max_gap: Annotated[
        int | None, typer.Option(min=1, help="Leave gaps longer than this many seqs unfilled.")
    ] = None,
    server: Server,
) -> None:
    """Rates, dropouts, gap filling and statistics of the stored streams."""
    # Imported here: numpy and the report's modules are for this command only.
    from forkwire.client.report import (
        ReportQuery,
        render_table,
        report_from_server,
        report_from_store,
    )

    query = ReportQuery(sensors=sensor, since=since, fill=fill.value, max_gap=max_gap)
    if db is not None:
        outcome = run(report_from_store(db, out, query))
    else:
        outcome = run(report_from_server(server.host, server.port, out, query, server.credentials))
    stdout().print(render_table(outcome.report))
    for note in outcome.notes:
        typer.echo(note, err=True)
    typer.echo("wrote " + ", ".join(str(path) for path in outcome.files))
