"""``forkwire stats`` and ``forkwire ping``: is the server there, how fast, what is it doing."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Annotated, Any

import typer

from forkwire.client.cli.app import Server, command, run, stdout
from forkwire.client.connection import Connection, describe_error
from forkwire.client.errors import ClientError, ConnectionLost
from forkwire.client.logs import get_logger
from forkwire.protocol import Error, Ping, Pong, Stats, StatsResult

HINT = "is the server running? check --host and --port"


log = get_logger("forkwire.client")


async def _open(server: Server) -> Connection:
    connection = await Connection.open(
        server.host, server.port, client="forkwire-status", credentials=server.credentials
    )
    log.debug("connected", server=connection.address, welcome=connection.welcome.server)
    return connection


@command(connect_hint=HINT)
def stats(
    *,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counters as one JSON object.")
    ] = False,
    server: Server,
) -> None:
    """The server's counters (connections, frames, jobs, readings, storage, UDP)."""
    counters = run(_stats(server))
    if as_json:
        typer.echo(json.dumps(counters, indent=2, sort_keys=True))
        return
    from rich.table import Table

    table = Table(title=f"forkwire server {server.host}:{server.port}")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in sorted(counters.items()):
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    stdout().print(table)


async def _stats(server: Server) -> dict[str, Any]:
    async with await _open(server) as connection:
        try:
            reply = await connection.request(Stats())
        except ConnectionLost as exc:
            raise ClientError(f"{connection.address}: {exc}") from None
        await connection.goodbye(wait=5.0)
    if isinstance(reply, Error):
        raise ClientError(f"{connection.address} answered stats with {describe_error(reply)}")
    if not isinstance(reply, StatsResult):
        raise ClientError(f"{connection.address} answered stats with {reply.type!r}")
    return dict(reply.counters)


@command(connect_hint=HINT)
def ping(
    *,
    count: Annotated[int, typer.Option("-c", "--count", min=1, help="Pings to send.")] = 3,
    interval: Annotated[
        float, typer.Option("-i", "--interval", min=0, help="Seconds between pings.")
    ] = 0.5,
    server: Server,
) -> None:
    """Round-trip time of ping -> pong over TCP, and the server's version."""
    run(_ping(server, count, interval))


async def _ping(server: Server, count: int, interval: float) -> None:
    connect_began = time.perf_counter()
    async with await _open(server) as connection:
        connect_ms = (time.perf_counter() - connect_began) * 1000
        typer.echo(
            f"{connection.address}: {connection.welcome.server}, protocol version "
            f"{connection.welcome.version}, connected and greeted in {connect_ms:.2f} ms"
        )
        times: list[float] = []
        for n in range(1, count + 1):
            if n > 1:
                await asyncio.sleep(interval)
            began = time.perf_counter()
            try:
                reply = await connection.request(Ping(id=n))
            except ConnectionLost as exc:
                raise ClientError(f"{connection.address}: {exc} after {n - 1} pongs") from None
            ms = (time.perf_counter() - began) * 1000
            if isinstance(reply, Error):
                raise ClientError(f"{connection.address} answered ping: {describe_error(reply)}")
            if not isinstance(reply, Pong) or reply.id != n:
                raise ClientError(f"{connection.address} answered ping {n} with {reply!r}")
            times.append(ms)
            typer.echo(f"pong {n} from {connection.address}: time={ms:.3f} ms")
        await connection.goodbye(wait=5.0)
    typer.echo(
        f"{count} pings, {len(times)} pongs, rtt min/avg/max = "
        f"{min(times):.3f}/{statistics.fmean(times):.3f}/{max(times):.3f} ms"
    )
