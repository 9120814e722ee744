"""``forkwire demo``: the same readings over TCP and UDP at several rates, every loss told."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forkwire.client.cli.app import checking_options, command, stdout


@command()
def demo(
    *,
    # Not the shared Server options: the demo starts a server of its own unless given one.
    host: Annotated[
        str | None, typer.Option(help="Measure this server instead of starting one.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Its TCP (and UDP) port.")] = None,
    token: Annotated[
        str | None,
        # No FORKWIRE_TOKEN here: the demo's own server has none, and the environment
        # never picks the demo's server (see --host).
        typer.Option(show_default=False, help="Its token."),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="Speak TLS to it.")] = False,
    cafile: Annotated[
        Path | None,
        typer.Option(show_default=False, help="PEM CA certificates to check its with."),
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option(
            help="Offered rates, readings/s, comma-separated; 'max' = unpaced. "
            "[1000,5000,20000,50000,100000,max]"
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="Readings per run. [20000; --quick 5000]")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Fewer rates and readings: under a minute.")] = False,
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Folder for demo.json and demo.png.")
    ] = Path("."),
    seed: Annotated[int, typer.Option(help="Seed of the noise runs.")] = 0,
    noise: Annotated[
        str, typer.Option(help="Noise of the extra low-rate pair; 'none' skips it.")
    ] = "dropout:2-3",
    udp_rcvbuf: Annotated[
        int | None, typer.Option(help="SO_RCVBUF for the demo's own server. [4 MiB]")
    ] = None,
    wide: Annotated[
        bool, typer.Option(help="Every column in the table (about 160 characters wide).")
    ] = False,
) -> None:
    """Send the same readings over TCP and UDP at several rates and account for every loss."""
    # Imported here: numpy and the demo's modules are for this command only.
    from forkwire.client.connection import Credentials
    from forkwire.client.demo import DemoConfig, parse_rates, print_table, run_demo_sync

    console = stdout()
    with checking_options():
        config = DemoConfig(
            host=host,
            port=port,
            credentials=Credentials(token=token or None, tls=tls, cafile=cafile),
            rates=parse_rates(rates) if rates else None,
            count=count,
            quick=quick,
            out_dir=out,
            seed=seed,
            noise=None if noise == "none" else noise,
            udp_rcvbuf=udp_rcvbuf,
            progress=lambda line: console.print(f"[dim]{line}[/]"),
        )
    print_table(console, run_demo_sync(config), wide=wide)
