"""``forkwire replay FILE``: a CSV file streamed as one sensor, a row every interval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forkwire.client.cli.app import (
    FirstConnect,
    Server,
    Stopped,
    checking_options,
    command,
    run,
    stoppable,
    transport_option,
)
from forkwire.client.ranges import parse_range
from forkwire.client.transport import Transport


@command(interrupted="interrupted; unsent rows stay in the outbox")
def replay(
    *,
    file: Annotated[Path, typer.Argument(help="CSV file; its first row names the columns.")],
    sensor: Annotated[
        str | None, typer.Option(help="Stream name (default: the file's stem).")
    ] = None,
    column: Annotated[
        str | None,
        typer.Option(help="Send this column as a number (default: each row as a record)."),
    ] = None,
    interval: Annotated[
        str,
        typer.Option(help="Seconds between rows: LOW-HIGH (uniform) or one number; 0: no wait."),
    ] = "1-3",
    loop: Annotated[bool, typer.Option(help="Start again at the end, forever.")] = False,
    out: Annotated[
        Path,
        typer.Option(
            "-o", "--out", help="Append 'seq,ts,<row>' here for each row sent to the outbox."
        ),
    ] = Path("out9.txt"),
    transport: Annotated[Transport, transport_option("fire-and-forget")] = Transport.tcp,
    udp_ack: Annotated[
        bool, typer.Option(help="Over UDP, wait for acks and resend like TCP.")
    ] = False,
    outbox: Annotated[
        Path, typer.Option(help="Local outbox (SQLite): unacked rows and seqs survive.")
    ] = Path("forkwire-replay.sqlite"),
    seed: Annotated[int | None, typer.Option(help="Seed of the interval draws.")] = None,
    server: Server,
    first_connect: FirstConnect,
) -> None:
    """Stream FILE to the server, one row every interval; Ctrl-C stops (rest stays queued)."""
    # Imported here: numpy and the fleet's modules are for this command only.
    from forkwire.client.replay.run import ReplayConfig, run_replay

    with checking_options():
        config = ReplayConfig(
            connect_timeout=first_connect.limit,
            file=file,
            sensor=sensor,
            column=column,
            interval=parse_range(interval, "interval", float),
            loop=loop,
            out=out,
            host=server.host,
            port=server.port,
            transport=transport,
            udp_ack=udp_ack,
            outbox=outbox,
            seed=seed,
        )
    summary = run(stoppable(run_replay(config), stopped := Stopped()))
    ending = "file done" if summary.exhausted else "stopped"
    typer.echo(
        f"{summary.sensor}: {summary.rows} rows sent in {summary.passes} pass(es), "
        f"{summary.skipped} skipped, {summary.acked} acked, {summary.pending} left in "
        f"{outbox} ({ending}), {summary.seconds:.2f} s -> {summary.out}"
    )
    stopped.check(f"{summary.pending:,} rows not yet acked wait in the outbox {outbox}")
