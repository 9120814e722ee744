"""``forkwire sensors``: a fleet of sensors streaming readings, with a live table."""

from __future__ import annotations

import contextlib
import enum
import json
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from forkwire.client.cli.app import (
    FirstConnect,
    Server,
    Stopped,
    checking_options,
    command,
    run,
    stdout,
    stoppable,
    transport_option,
)
from forkwire.client.sensors import DEFAULT_BATCH
from forkwire.client.transport import Transport

if TYPE_CHECKING:
    from forkwire.client.sensors.sensor import Sensor
    from forkwire.client.sensors.status import FleetSummary


class OutboxPolicyChoice(enum.StrEnum):
    """What a full outbox does."""

    block = "block"
    drop_oldest = "drop-oldest"


@command(interrupted="interrupted; unsent readings stay in the outbox")
def sensors(
    *,
    count: Annotated[int, typer.Option(min=0, help="Sensors to run.")] = 5,
    kinds: Annotated[
        str,
        typer.Option(
            help="Sensor kinds, comma-separated, cycled over the sensors: "
            "random (5 s), fast (1 s), slow (15 s), sine, vector, system."
        ),
    ] = "random",
    period: Annotated[
        float | None, typer.Option(min=0.001, help="Seconds between readings (overrides kinds).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to run (default: until Ctrl-C).")
    ] = None,
    slots: Annotated[int, typer.Option(min=1, help="Frames in flight across the fleet.")] = 5,
    batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Most readings per frame (a slot carries one frame); 1 sends each reading "
            "on its own, as MQTT does.",
        ),
    ] = DEFAULT_BATCH,
    outbox: Annotated[
        Path, typer.Option(help="Local outbox (SQLite): unacked readings and seqs survive.")
    ] = Path("forkwire-outbox.sqlite"),
    outbox_max: Annotated[int, typer.Option(min=1, help="Outbox bound, in readings.")] = 100_000,
    outbox_policy: Annotated[
        OutboxPolicyChoice, typer.Option(help="When the outbox is full.")
    ] = OutboxPolicyChoice.block,
    prefix: Annotated[str, typer.Option(help="Sensors are named PREFIX-N.")] = "sensor",
    transport: Annotated[Transport, transport_option("fire-and-forget")] = Transport.tcp,
    udp_ack: Annotated[
        bool, typer.Option(help="Over UDP, wait for acks and resend like TCP.")
    ] = False,
    noise: Annotated[
        list[str] | None,
        typer.Option(
            help="Noise stage, repeatable: dropout:2-3 (one drop every 2-3 s), "
            "random:0.05 (drop with p)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the noise stages.")] = 0,
    server: Server,
    first_connect: FirstConnect,
    live: Annotated[bool | None, typer.Option(help="Live table (default: on a terminal).")] = None,
    json_summary: Annotated[
        bool, typer.Option("--json", help="End with the summary as JSON on stdout, no table.")
    ] = False,
) -> None:
    """Run a fleet of sensors that stream readings to the server through a shared network."""
    # Imported here: numpy, rich's live display and the fleet's modules are for this
    # command only (every command module is imported to build the command line).
    from rich.console import Console
    from rich.live import Live

    from forkwire.client.sensors.config import FleetConfig
    from forkwire.client.sensors.fleet import run_fleet
    from forkwire.client.sensors.noise import parse_noise
    from forkwire.client.sensors.status import render_status

    specs = list(noise or [])

    def noise_for(sensor: Sensor) -> Callable[[object], bool] | None:
        if not specs:
            return None
        # Each sensor its own seeded stream, so runs repeat and sensors drop independently.
        return parse_noise(specs, seed=zlib.crc32(f"{seed}:{sensor.name}".encode()))

    console = Console(stderr=True)
    show = console.is_terminal if live is None else live
    display: Live | None = None

    def on_status(summary: FleetSummary) -> None:
        if display is not None:
            display.update(render_status(summary))

    with checking_options():
        parse_noise(specs)  # a bad spec is a usage error before anything starts
        config = FleetConfig(
            connect_timeout=first_connect.limit,
            host=server.host,
            port=server.port,
            count=count,
            kinds=[kind.strip() for kind in kinds.split(",") if kind.strip()],
            period=period,
            duration=duration,
            slots=slots,
            batch=batch,
            outbox=outbox,
            outbox_max=outbox_max,
            outbox_policy=outbox_policy.value,
            prefix=prefix,
            transport=transport,
            udp_ack=udp_ack,
            noise=noise_for,
            on_status=on_status if show else None,
        )
    with contextlib.ExitStack() as stack:
        if show:
            display = stack.enter_context(Live(console=console, refresh_per_second=4))
        summary = run(stoppable(run_fleet(config), stopped := Stopped()))
        if display is not None:
            display.update(render_status(summary))
    if json_summary:
        typer.echo(json.dumps(summary.to_json()))
    elif display is None or not (console.is_terminal and sys.stdout.isatty()):
        # A live table stays on the terminal when it stops, showing the final summary:
        # printed again on the same screen it would be there twice.
        stdout().print(render_status(summary))
    stopped.check(f"{summary.pending:,} readings not yet acked wait in the outbox {outbox}")
