"""The ``forkwire`` app: the options its commands share, and the one place errors end them.

Shared options are declared once, here. ``--log-level`` and ``--log-format`` are the
app's own, given before or after the command (``forkwire --log-level debug sensors`` or
``forkwire sensors --log-level debug``: :func:`~forkwire.client.cli.main.main` moves them).
The server a command talks to is a :class:`Server`: a command that takes one gets
``--host`` and ``--port`` (and whatever else reaching a server comes to need), put into
its signature by :func:`command`.

:func:`command` is also where a command ends: a :class:`~forkwire.client.errors.ClientError`
becomes ``forkwire: <message>`` on stderr and the error's exit status, Ctrl-C becomes the
command's one line about what was left and status 130. Anything else escaping a command
is a bug and keeps its traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import inspect
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_type_hints

import typer

from forkwire.client.connection import DEFAULT_HOST, Credentials
from forkwire.client.errors import (
    AccessDenied,
    ClientError,
    ConnectError,
    Interrupted,
    UsageError,
)
from forkwire.client.logs import configure_logging
from forkwire.protocol import DEFAULT_PORT

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="forkwire client: send compute jobs and sensor streams to a forkwire server.",
)


class LogLevel(enum.StrEnum):
    """How much the commands log (to stderr)."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(enum.StrEnum):
    """How log lines look."""

    console = "console"
    json = "json"


def _version(value: bool) -> None:
    if value:
        import forkwire

        typer.echo(f"forkwire {forkwire.__version__}")
        raise typer.Exit(0)


@app.callback()
def _setup(
    log_level: Annotated[
        LogLevel, typer.Option(envvar="FORKWIRE_LOG_LEVEL", help="Log level (logs go to stderr).")
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar="FORKWIRE_LOG_FORMAT",
            help="Log lines: console (for people; colours only on a terminal without "
            "NO_COLOR) or json (one object per line, UTC ISO timestamps).",
        ),
    ] = LogFormat.console,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    configure_logging(log_level.value, log_format.value)


@dataclasses.dataclass(frozen=True)
class Server:
    """The server a command talks to; each field is an option of every such command."""

    host: Annotated[str, typer.Option(envvar="FORKWIRE_HOST", help="Server address.")] = (
        DEFAULT_HOST
    )
    port: Annotated[
        int, typer.Option(envvar="FORKWIRE_PORT", min=1, max=65535, help="Server TCP port.")
    ] = DEFAULT_PORT
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FORKWIRE_TOKEN",
            show_default=False,
            help="The server's token (TCP: sent in hello, use --tls; UDP: each datagram is "
            "sealed with it). Prefer the environment: a command line is visible to others.",
        ),
    ] = None
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", envvar="FORKWIRE_TLS", help="Speak TLS to the server (its TCP port)."
        ),
    ] = False
    cafile: Annotated[
        Path | None,
        typer.Option(
            envvar="FORKWIRE_CAFILE",
            show_default=False,
            help="PEM CA certificates to check the server's with (implies --tls); default: "
            "the system's.",
        ),
    ] = None

    def __repr__(self) -> str:  # never the token, in a traceback or a log
        return f"Server(host={self.host!r}, port={self.port}, tls={self.tls})"

    @property
    def credentials(self) -> Credentials:
        """What the connections to this server show it."""
        return Credentials(token=self.token or None, tls=self.tls, cafile=self.cafile)


#: How help shows an option's value: as a user writes it, not as a Python type.
_PLACEHOLDERS = {"int": "N", "float": "NUMBER", "str": "TEXT", "path": "PATH", "bool": "BOOL"}
_NAMED_PLACEHOLDERS = {"host": "HOST", "db": "URL", "out": "PATH", "cafile": "PATH"}


def command_line() -> Any:
    """The click command of :data:`app`, its value placeholders in words.

    typer names a value by its Python type (``<int range>``, ``<list[str]>``); help shows
    ``N``, ``TEXT``, ``URL`` or the choices instead, and an argument only its name.
    """
    group = typer.main.get_command(app)
    for command in [group, *getattr(group, "commands", {}).values()]:
        context = typer.Context(command)
        for param in command.params:
            if param.metavar is not None or param.name is None:
                continue
            if param.param_type_name == "argument":
                # Its name says what it is (FILE, COUNT); its help says the rest.
                param.metavar = param.name.upper()
                setattr(param, "display_type_rich", _no_type)  # noqa: B010 - a method
                continue
            label = param.display_type(context).strip("<>").removesuffix(" range")
            label = label.removeprefix("list[").removesuffix("]")  # repeatable: says so
            param.metavar = _NAMED_PLACEHOLDERS.get(param.name) or _PLACEHOLDERS.get(label, label)
    return group


def _no_type(ctx: Any) -> str:
    return ""


@dataclasses.dataclass(frozen=True)
class FirstConnect:
    """How long a streaming command tries to reach the server before it gives up."""

    connect_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Give up (exit 1) when no connection succeeded within this many seconds "
            "of the start: a wrong host or port. Once connected, a lost server is always "
            "waited for.",
        ),
    ] = 10.0
    wait: Annotated[
        bool, typer.Option("--wait", help="Keep trying to reach the server however long.")
    ] = False

    @property
    def limit(self) -> float | None:
        """The bound for the run's config: None waits forever."""
        return None if self.wait else self.connect_timeout


def transport_option(udp: str) -> Any:
    """The ``--transport`` option, tcp or udp; ``udp`` says what udp means to the command."""
    return typer.Option(help=f"tcp, or udp ({udp}).")


def command(
    *, interrupted: str = "interrupted", connect_hint: str | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Make a function a command: shared options in, one line and an exit status out.

    A parameter annotated with an option group (:class:`Server`, :class:`FirstConnect`)
    becomes one option per field of the group, and the function is called with the group
    they make. Every parameter is passed by
    name, so commands declare theirs keyword-only (``def calc(*, file, ...)``).

    Args:
        interrupted: the line for Ctrl-C: what the interrupted command left behind.
        connect_hint: added in brackets to a :class:`ConnectError`: what to check or try.
    """

    def wrap(func: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(func, eval_str=True)
        groups = {p.name: p.annotation for p in signature.parameters.values()}
        groups = {name: kind for name, kind in groups.items() if kind in _GROUPS}
        if len(set(groups.values())) < len(groups):
            raise TypeError(f"{func.__name__} takes an option group twice: {groups}")
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            parameters += _GROUPS.get(parameter.annotation, [parameter])

        @functools.wraps(func)
        def run(**options: Any) -> None:
            for name, kind in groups.items():
                options[name] = kind(**{p.name: options.pop(p.name) for p in _GROUPS[kind]})
            try:
                func(**options)
            except KeyboardInterrupt:
                raise _ended(interrupted, 130) from None
            except ClientError as exc:
                message = str(exc)
                # AccessDenied: the server was reached; "is it running?" would mislead.
                reached = isinstance(exc, AccessDenied)
                if isinstance(exc, ConnectError) and connect_hint is not None and not reached:
                    message += f" ({connect_hint})"
                raise _ended(message, exc.exit_status) from None

        # typer reads a command's options from its signature. mypy knows `run` only as a
        # Callable, which has no __signature__ to set; a function object takes it.
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return run

    return wrap


def _group_options(group: type) -> list[inspect.Parameter]:
    hints = get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in dataclasses.fields(group)
    ]


#: Dataclasses whose fields are options of every command that takes one of them.
_GROUPS: dict[Any, list[inspect.Parameter]] = {
    group: _group_options(group) for group in (Server, FirstConnect)
}


def _ended(message: str, status: int) -> typer.Exit:
    typer.echo(f"forkwire: {message}", err=True)
    return typer.Exit(status)


@contextlib.contextmanager
def checking_options() -> Iterator[None]:
    """Treat a ValueError in the block as a bad option value: a :class:`UsageError`.

    Configs and parsers raise ValueError on a bad argument, as library code should; in a
    command, those arguments are the user's options.
    """
    try:
        yield
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def stdout() -> Console:
    """A console for a command's tables on stdout."""
    # Imported here: rich is 20 ms of a start, and calc prints no table.
    from rich.console import Console

    # Piped into a file, rich would fold wide tables to 80 columns and elide the numbers.
    return Console(width=None if sys.stdout.isatty() else 200)


_T = TypeVar("_T")


def run(work: Coroutine[Any, Any, _T]) -> _T:
    """Run a command's coroutine on uvloop where it is installed (asyncio's loop else):
    the ack round trip of a fleet and the calc client's hot path are faster on it."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency on every POSIX platform
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


class Stopped:
    """Which signal, if any, ended a :func:`stoppable` run (SIGINT or SIGTERM)."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def check(self, left: str) -> None:
        """After a run that returned its summary: if a signal ended it, end the command
        with 130 (Ctrl-C) or 143 (SIGTERM) and one line saying what is ``left``.

        Raises:
            Interrupted: a signal stopped the run.
        """
        if self.signal is not None:
            raise self.interrupted(left)

    def interrupted(self, left: str) -> Interrupted:
        """The command's end for the signal that came (Ctrl-C when none was recorded: a
        KeyboardInterrupt outside the run), saying what is ``left``."""
        terminated = self.signal == signal.SIGTERM
        word = "terminated" if terminated else "interrupted"
        return Interrupted(f"{word}; {left}", terminated=terminated)


async def stoppable(work: Coroutine[Any, Any, _T], stopped: Stopped | None = None) -> _T:
    """Run ``work`` so that SIGINT and SIGTERM stop it gracefully, with a summary.

    A supervisor (systemd, docker stop) sends SIGTERM, a user Ctrl-C; the fleet treats
    cancellation as the normal way to end (stop probing, await in-flight acks, keep the
    rest queued). ``stopped`` records which signal came; a second one cancels again,
    which cuts the draining short.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def received(signum: signal.Signals) -> None:
        if stopped is not None and stopped.signal is None:
            stopped.signal = signum
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, received, signum)
    try:
        return await work
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
