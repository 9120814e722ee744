"""``forkwire profiles COUNT``: Faker profiles generated, kept by age, spooled and sent."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from forkwire.client.cli.app import Server, checking_options, command
from forkwire.client.errors import ClientError, Interrupted
from forkwire.client.ranges import parse_range


class SpoolFormat(enum.StrEnum):
    """How the profiles spool stores records."""

    json = "json"
    pickle = "pickle"


class ProfileLocale(enum.StrEnum):
    """Faker locales of the profiles (and of the ages printed)."""

    en_US = "en_US"
    ru_RU = "ru_RU"


class ProfilesFailed(ClientError):
    """A process of the pipeline did not end cleanly (the summary was printed first)."""


@command(interrupted="interrupted twice; unsent profiles stay in the spool")
def profiles(
    ctx: typer.Context,
    *,
    count: Annotated[int, typer.Argument(min=1, help="Profiles to generate.")],
    interval: Annotated[
        float, typer.Option(min=0, help="Seconds between generated profiles.")
    ] = 0.5,
    spool: Annotated[
        Path | None,
        typer.Option(help="Spool file of kept profiles (default: profiles-spool.jsonl/.pickle)."),
    ] = None,
    spool_format: Annotated[
        SpoolFormat, typer.Option("--format", help="Spool format: json lines, or pickles.")
    ] = SpoolFormat.json,
    locale: Annotated[ProfileLocale, typer.Option(help="Faker locale.")] = ProfileLocale.en_US,
    ages: Annotated[str, typer.Option(help="Keep ages LOW-HIGH (inclusive).")] = "30-40",
    drain_timeout: Annotated[
        float,
        typer.Option(min=0, help="At the end, seconds the sender may take to empty the spool."),
    ] = 30.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the Faker profiles.")] = None,
    server: Server,
) -> None:
    """Generate COUNT Faker profiles, keep those in the age range, send them to the server.

    Three processes at once: a generator, a processor writing the spool file, and a
    sender that empties it into the 'profiles' stream.
    """
    # Imported here: the pipeline's modules are for this command only.
    from forkwire.client.profiles.config import ProfilesConfig
    from forkwire.client.profiles.pipeline import run_profiles

    # The children log as the parent does.
    log_level = ctx.find_root().params.get("log_level") or "info"
    with checking_options():
        config = ProfilesConfig(
            count=count,
            interval=interval,
            spool=spool,
            format=spool_format.value,
            locale=locale.value,
            ages=parse_range(ages, "ages", int),
            drain_timeout=drain_timeout,
            seed=seed,
            host=server.host,
            port=server.port,
            log_level=str(log_level),
        )
    summary = run_profiles(config)
    typer.echo(
        f"generated {summary.generated}, kept {summary.kept}"
        + (f" (+{summary.resumed} resumed from the spool)" if summary.resumed else "")
        + f", sent {summary.sent}, "
        f"retried {summary.retried} ({summary.failures} failed sends), "
        + (f"refused as conflicts {summary.conflicts}, " if summary.conflicts else "")
        + f"left in spool {summary.left} -> {summary.spool}"
    )
    if summary.failed:
        raise ProfilesFailed("; ".join(summary.failed))
    if summary.interrupted:
        raise Interrupted(
            f"interrupted; {summary.left:,} profiles wait in the spool {summary.spool}"
        )
