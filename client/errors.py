"""The client's errors: each one a line for the user and an exit status.

Commands raise these (or subclasses beside the job that raises them: ``CalcFailed``,
``ReportFailed``, ``DemoError``, ``ServerFailed``, ``ProfilesFailed``); the CLI turns any of
them into ``forkwire: <message>`` on stderr and the exit status of its class, in one place
(:func:`forkwire.client.cli.app.command`). Anything else escaping a command is a bug and
keeps its traceback. Exit statuses: 0 done, 1 failed at run time, 2 usage (bad options or
input), 130 interrupted by Ctrl-C, 143 stopped by SIGTERM.
"""

from __future__ import annotations

from pathlib import Path


class ClientError(Exception):
    """A failure to report in one line; ``exit_status`` ends the command."""

    exit_status: int = 1


class UsageError(ClientError):
    """The command was given something it cannot use (an option, a file, a spec)."""

    exit_status = 2


class InputError(UsageError):
    """An input file cannot be read, or an output file cannot be written."""


def make_folder(path: Path, what: str) -> None:
    """Create the folder ``path`` (and its parents) for a command's output files.

    Raises:
        InputError: it cannot be created (a file is in the way, no permission, ...).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the {what} {path}: {exc.strerror or exc}") from None


class ConnectError(ClientError):
    """The server could not be reached, or did not greet us properly."""


class AccessDenied(ConnectError):
    """The server refused who we are or how we speak (a wrong or missing token, TLS on one
    side only, a certificate refused): trying again the same way cannot help."""


class ConnectionLost(ClientError):
    """The server closed the connection, or broke the protocol, mid-conversation.

    ``retry_after``: the server's advice on when to try again (``error.retry_after``).
    """

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class MissingExtra(ClientError):
    """A command needs a dependency installed with one of forkwire's extras."""

    def __init__(self, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{extra}' extra: pip install 'forkwire[{extra}]'")
        self.extra = extra


class Interrupted(ClientError):
    """Ctrl-C (status 130) or SIGTERM (143) ended a command; the message says what is left."""

    exit_status = 130

    def __init__(self, message: str, *, terminated: bool = False) -> None:
        super().__init__(message)
        self.exit_status = 143 if terminated else 130
