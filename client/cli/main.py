"""The ``forkwire`` command: every command on the app, in the order ``--help`` lists them.

Each command module imports what its command runs inside the command, so starting one
command (``calc``, on the hot path) does not import every other's dependencies.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from forkwire.client.cli import (
    calc,
    demo,
    gen_ops,
    outbox,
    profiles,
    replay,
    report,
    sensors,
    status,
)
from forkwire.client.cli.app import app, command_line

for _command in (
    calc.calc,
    gen_ops.gen_ops,
    report.report,
    sensors.sensors,
    outbox.outbox,
    replay.replay,
    profiles.profiles,
    demo.demo,
    status.stats,
    status.ping,
):
    app.command()(_command)

#: The app's own options (see ``_setup``), which a user may also give after the command.
GLOBAL_OPTIONS = frozenset({"--log-level", "--log-format"})


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the app's own options moved in front of the command, where click
    reads them: ``forkwire calc FILE --log-level debug`` works as ``forkwire --log-level
    debug calc FILE``. Nothing after ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        name, has_value, _ = arg.partition("=")
        if name in GLOBAL_OPTIONS:
            width = 1 if has_value else 2
            front += args[index : index + width]
            index += width
            continue
        rest.append(arg)
        index += 1
    return front + rest


def main() -> NoReturn:
    """Console-script entry point.

    Once the command has finished and its output is flushed, the process ends without
    tearing the interpreter down: freeing every module and object took 60-70 ms of each
    run (``forkwire --version`` in 0.26 s instead of 0.32 s, measured), time in which a
    user or a script waits for nothing. An exception that is not the command's exit still
    takes the usual way out, traceback and all.
    """
    try:
        command_line()(args=hoist_global_options(sys.argv[1:]), prog_name="forkwire")
    except SystemExit as done:
        status = exit_status(done.code)
    else:  # pragma: no cover - click's standalone mode always ends in SystemExit
        status = 0
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away, a stream already closed
            status = status or 1
    os._exit(status)


def exit_status(code: object) -> int:
    """The process status for ``SystemExit(code)``, as the interpreter would exit with it
    (a message is printed and means 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
