"""The client's errors: each one a line for the user and an exit status.

Commands raise these (or subclasses beside the job that raises them: ``CalcFailed``,
``ReportFailed``, ``DemoError``, ``ServerFailed``, ``ProfilesFailed``); the CLI turns any of
them into ``forkwire: <message>`` on stderr and the exit status of its class, in one place
(:func:`forkwire.client.cli.app.command`). Anything else escaping a command is a bug and
keeps its traceback. Exit statuses: 0 done, 1 failed at run time, 2 usage (bad options or
input), 130 interrupted.
"""

from __future__ import annotations

from typing import ClassVar


class ClientError(Exception):
    """A failure to report in one line; ``exit_status`` ends the command."""

    exit_status: ClassVar[int] = 1


class UsageError(ClientError):
    """The command was given something it cannot use (an option, a file, a spec)."""

    exit_status = 2


class InputError(UsageError):
    """An input file cannot be read, or an output file cannot be written."""


class ConnectError(ClientError):
    """The server could not be reached, or did not greet us properly."""


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
