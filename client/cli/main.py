"""The ``forkwire`` command: every command on the app, in the order ``--help`` lists them.

Each command module imports what its command runs inside the command, so starting one
command (``calc``, on the hot path) does not import every other's dependencies.
"""

from __future__ import annotations

from forkwire.client.cli import (
    calc,
    demo,
    gen_ops,
    outbox,
    profiles,
    replay,
    report,
    sensors,
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
):
    app.command()(_command)


def main() -> None:
    """Console-script entry point."""
    command_line()(prog_name="forkwire")
