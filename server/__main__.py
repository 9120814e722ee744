"""``forkwire-server``: arguments → settings → run. The only place that exits the process."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError

from forkwire.server.app import run
from forkwire.server.config import Settings
from forkwire.server.logs import configure_logging
from forkwire.server.loops import loop_factory

cli = typer.Typer(add_completion=False, rich_markup_mode=None)


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    return f"{default} (env FORKWIRE_{name.upper()})"


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
def serve(
    host: Annotated[str | None, typer.Option(help=f"Address to bind. [{_default('host')}]")] = None,
    port: Annotated[int | None, typer.Option(help=f"TCP port. [{_default('port')}]")] = None,
    udp: Annotated[
        bool | None,
        typer.Option("--udp/--no-udp", help=f"Serve UDP too. [{_default('udp')}]"),
    ] = None,
    udp_port: Annotated[
        int | None,
        typer.Option(help="UDP port. [the TCP port number] (env FORKWIRE_UDP_PORT)"),
    ] = None,
    udp_rcvbuf: Annotated[
        int | None,
        typer.Option(help="SO_RCVBUF bytes for UDP. [the OS default] (env FORKWIRE_UDP_RCVBUF)"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=f"Job children alive at once. [{_default('workers')}]")
    ] = None,
    max_frame: Annotated[
        int | None, typer.Option(help=f"Largest frame in bytes. [{_default('max_frame')}]")
    ] = None,
    job_timeout: Annotated[
        float | None,
        typer.Option(help=f"Seconds before a job's child is killed. [{_default('job_timeout')}]"),
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(help=f"Seconds running jobs get on shutdown. [{_default('grace')}]"),
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option(help=f"Characters per expression. [{_default('max_length')}]"),
    ] = None,
    max_depth: Annotated[
        int | None,
        typer.Option(help=f"Nested parentheses per expression. [{_default('max_depth')}]"),
    ] = None,
    max_digits: Annotated[
        int | None, typer.Option(help=f"Digits per literal. [{_default('max_digits')}]")
    ] = None,
    db: Annotated[
        list[str] | None,
        typer.Option(
            help="The store: sqlite:///PATH, postgresql://..., csv:///PATH or memory://; "
            "repeated, later URLs are sinks that get a copy of what it stored (screen:// "
            f"prints it). [{_default('db')}]"
        ),
    ] = None,
    commit_interval: Annotated[
        float | None,
        typer.Option(help=f"Group-commit interval in seconds. [{_default('commit_interval')}]"),
    ] = None,
    commit_batch: Annotated[
        int | None,
        typer.Option(help=f"Group-commit size in readings. [{_default('commit_batch')}]"),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help=f"auto, console or json. [{_default('log_format')}]"),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(help=f"debug, info, warning or error. [{_default('log_level')}]"),
    ] = None,
) -> None:
    """Run the forkwire daemon until SIGINT or SIGTERM."""
    overrides: dict[str, Any] = {
        name: value for name, value in locals().items() if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            typer.echo(f"forkwire-server: --{name.replace('_', '-')}: {error['msg']}", err=True)
        raise typer.Exit(2) from None
    log_format_value: Literal["auto", "console", "json"] = settings.log_format
    configure_logging(log_format_value, settings.log_level)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run(settings))
    except OSError as exc:
        typer.echo(f"forkwire-server: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:  # a storage URL the backends refuse
        typer.echo(f"forkwire-server: {exc}", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="forkwire-server")


if __name__ == "__main__":
    main()
