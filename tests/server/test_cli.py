"""forkwire-server's command line: built from the settings model, one option per field."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from forkwire.server.config import Settings


def server_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m forkwire.server ARGS`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "forkwire.server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_help_has_an_option_per_setting_with_its_default_and_variable() -> None:
    """Every field of Settings is an option; help shows its default as a user writes it."""
    result = server_cli("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in text
        assert f"env FORKWIRE_{name.upper()}" in text
    assert "[default: sqlite:///forkwire.sqlite;" in text
    assert "[default: the TCP port number;" in text
    assert "('" not in text  # no Python reprs
    assert "list[" not in text


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "70000"], "--port"),
        (["--workers", "0"], "--workers"),
        (["--db", "sqlite://"], "sqlite URL needs a file path"),
        (["--db", "screen://"], "cannot be the store"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_a_bad_setting_is_one_line_and_status_2(args: list[str], named: str) -> None:
    """A value the model refuses ends the server at once, naming the option."""
    result = server_cli("--port", "0", "--no-udp", *args)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_taken_port_is_one_line_in_the_logs_format(log_format: str) -> None:
    """A start that fails (the port is taken) says so in one line, exit 1; in JSON mode
    that line is JSON too, so a log reader of JSON lines is never handed plain text."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = server_cli("--port", str(port), "--db", "memory://", "--log-format", log_format)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    if log_format == "console":
        assert last.startswith("forkwire-server: cannot start: "), last
        return
    for line in done.stderr.strip().splitlines():
        json.loads(line)  # every line
    event = json.loads(last)
    assert event["event"] == "start_failed"
    assert event["message"].startswith("forkwire-server: cannot start: ")
