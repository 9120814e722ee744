"""``forkwire-server``: arguments → settings → run. The only place that exits the process.

The command line is built from :class:`~forkwire.server.config.Settings`: one option per
field, with its name, type, choices, description and default, so a setting is declared in
one place. An option given wins over ``FORKWIRE_<NAME>``, which wins over the ``--config``
file, which wins over the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

import forkwire
from forkwire.server.app import run
from forkwire.server.config import Settings
from forkwire.server.daemon import Notifier, PidfileBusy, daemonize, pidfile, redirect_output
from forkwire.server.logs import configure_logging, json_lines
from forkwire.server.loops import loop_factory


def serve(config: Path | None = None, **options: Any) -> None:
    """Run the forkwire daemon until SIGINT or SIGTERM."""
    given = {name: value for name, value in options.items() if value is not None}
    try:
        settings = load_settings(given, config)
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":  # only a config file can name one
                typer.echo(f"forkwire-server: {config}: unknown setting {name!r}", err=True)
                raise typer.Exit(2) from None
            # A check across settings (max_reply against max_frame) has no one option.
            where = f"--{name.replace('_', '-')}: " if name else ""
            typer.echo(f"forkwire-server: {where}{error['msg']}", err=True)
        raise typer.Exit(2) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        typer.echo(f"forkwire-server: --config {config}: {exc}", err=True)
        raise typer.Exit(2) from None
    notifier = daemonize() if settings.daemon else Notifier(None)

    logging_ready = False

    def fail(status: int, message: str) -> typer.Exit:
        line = f"forkwire-server: {message}"
        if logging_ready and json_lines(settings.log_format):
            # A log reader of JSON lines gets this one as JSON too, the line in it.
            structlog.get_logger("forkwire.server").error(
                "start_failed", message=line, status=status
            )
        else:
            typer.echo(line, err=True)
        notifier.failed(status, message)
        return typer.Exit(status)

    if settings.log_file is not None:
        try:
            redirect_output(settings.log_file)
        except OSError as exc:
            raise fail(1, f"--log-file: {exc}") from None
    configure_logging(settings.log_format, settings.log_level)
    logging_ready = True
    try:
        # uvloop's start_tls on an accepted stream stalls the handshake; asyncio's works,
        # and a TLS server's cost is in the cipher anyway.
        factory = asyncio.new_event_loop if settings.tls_cert is not None else loop_factory()
        with contextlib.ExitStack() as held:
            if settings.pidfile is not None:
                held.enter_context(pidfile(settings.pidfile))
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(run(settings, on_ready=notifier.ready))
    except PidfileBusy as exc:
        raise fail(1, f"--pidfile: {exc}") from None
    except OSError as exc:
        raise fail(1, f"cannot start: {exc}") from None
    except ValueError as exc:  # a storage URL the backends refuse
        raise fail(2, str(exc)) from None
    finally:
        # Anything else that ended it (a storage timeout's error is logged by run).
        notifier.failed(1, "the server stopped before it was ready (see its log)")


def load_settings(given: dict[str, Any], config: Path | None) -> Settings:
    """The settings from the options ``given``, the environment, then ``config`` (TOML),
    then the defaults, in that order of precedence."""
    if config is None:
        return Settings(**given)
    with config.open("rb") as file:
        tomllib.load(file)  # its syntax errors, with the line, before pydantic's

    class FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, config))

    return FromFile(**given)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forkwire {forkwire.__version__}")
        raise typer.Exit(0)


_EXTRA_OPTIONS = [
    inspect.Parameter(
        "version",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[
            bool,
            typer.Option(
                "--version", callback=_version, is_eager=True, help="Print the version and exit."
            ),
        ],
    ),
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[
            Path | None,
            typer.Option(
                "--config",
                envvar="FORKWIRE_CONFIG",
                metavar="PATH",
                show_default=False,
                help="A TOML file of settings (their names as keys: port = 7700); options "
                "and FORKWIRE_* variables win over it.",
            ),
        ],
    ),
]


def _option(name: str, field: FieldInfo) -> inspect.Parameter:
    """The typer option of one settings field (None when not given: the model decides)."""
    kind, metavar = _cli_type(field.annotation)
    flag = f"--{name.replace('_', '-')}"
    declarations = [f"{flag}/--no-{name.replace('_', '-')}"] if kind is bool else [flag]
    option = typer.Option(
        *declarations,
        help=f"{field.description} [default: {_shown(field)}; env FORKWIRE_{name.upper()}]",
        show_default=False,
        metavar=metavar,
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def _cli_type(annotation: Any) -> tuple[Any, str | None]:
    """The type typer parses for a field, and the placeholder help shows for its value."""
    if isinstance(annotation, types.UnionType):  # X | None: the option is optional anyway
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is tuple:  # repeatable: --db A --db B
        return list[str], "URL"
    if annotation is SecretStr:  # the model wraps it: never printed, never logged
        return str, "TEXT"
    if annotation is Path:
        return str, "PATH"
    return annotation, {int: "N", float: "SECONDS", str: "TEXT"}.get(annotation)


def _shown(field: FieldInfo) -> str:
    """A default as a user writes it."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown" in extra:
        return str(extra["shown"])
    default = field.get_default(call_default_factory=True)
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def _command() -> Callable[..., None]:
    """``serve`` with one keyword parameter per settings field, for typer to read."""

    def command(version: bool = False, **options: Any) -> None:
        serve(**options)

    command.__doc__ = serve.__doc__
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            *(_option(name, field) for name, field in Settings.model_fields.items()),
            *_EXTRA_OPTIONS,
        ]
    )
    return command


cli = typer.Typer(add_completion=False, rich_markup_mode=None)
cli.command(context_settings={"help_option_names": ["-h", "--help"]})(_command())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="forkwire-server")


if __name__ == "__main__":
    main()
