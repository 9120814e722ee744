"""``forkwire outbox``: what a sensor fleet's (or a replay's) outbox holds, and emptying it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from forkwire.client.cli.app import command, stdout
from forkwire.client.errors import InputError


@command()
def outbox(
    *,
    path: Annotated[
        Path, typer.Argument(help="The outbox file (forkwire-outbox.sqlite by default).")
    ] = Path("forkwire-outbox.sqlite"),
    purge: Annotated[
        bool, typer.Option(help="Delete every reading waiting in it (seqs and producer stay).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Purge without asking.")] = False,
) -> None:
    """Show an outbox: its producer id, the readings waiting per sensor, the oldest, its size."""
    from rich.table import Table

    from forkwire.client.sensors.outbox import Outbox

    if not path.is_file():
        raise InputError(f"no outbox at {path}")
    with Outbox(path) as box:
        info = box.info()
        table = Table(title=f"outbox {path}", show_footer=True)
        table.add_column("sensor", footer="total")
        table.add_column("waiting", justify="right", footer=f"{info.total:,}")
        for sensor, count in info.waiting.items():
            table.add_row(sensor, f"{count:,}")
        out = stdout()
        out.print(table)
        out.print(f"producer {info.producer or '(anonymous: an outbox from before producer ids)'}")
        if info.created_at is not None:
            out.print(f"created {_when(info.created_at)}")
        if info.oldest_ts is not None:
            out.print(f"oldest reading waiting: {_when(info.oldest_ts)}")
        out.print(f"{info.bytes:,} bytes on disk")
        if not purge:
            return
        if info.total == 0:
            out.print("nothing to purge")
            return
        if not yes and not typer.confirm(
            f"delete the {info.total:,} readings waiting in {path}? they will never be sent"
        ):
            raise typer.Exit(1)
        out.print(f"purged {box.purge():,} readings")


def _when(ts: float) -> str:
    return f"{dt.datetime.fromtimestamp(ts, dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
