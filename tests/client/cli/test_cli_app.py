"""The app's shared options: one --host/--port for every command that talks to a server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fwtest import REPO, free_port, run_cli

#: The commands that talk to a server given by --host/--port (the demo has its own pair:
#: without them it starts a server of its own).
SERVER_COMMANDS = ("calc", "report", "sensors", "replay", "profiles", "stats", "ping")


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_every_server_command_has_the_shared_host_and_port(command: str) -> None:
    """--host and --port, read from FORKWIRE_HOST and FORKWIRE_PORT, on each command."""
    done = run_cli(command, "--help")
    assert done.returncode == 0, done.stderr
    help_text = " ".join(done.stdout.split())
    assert "--host HOST Server address. [env var: FORKWIRE_HOST; default: 127.0.0.1]" in help_text
    assert (
        "--port N Server TCP port. [env var: FORKWIRE_PORT; default: 7700; 1<=x<=65535]"
        in help_text
    )


def test_the_demo_keeps_its_own_host_and_port() -> None:
    """The demo's --host/--port pick a server to measure; no environment variable sets them."""
    done = run_cli("demo", "--help")
    help_text = " ".join(done.stdout.split())
    assert "--host HOST Measure this server instead of starting one." in help_text
    assert "FORKWIRE_" not in help_text


ALL_COMMANDS = (
    *("calc", "gen-ops", "report", "sensors", "outbox", "replay", "profiles", "demo"),
    *("stats", "ping"),
)


@pytest.mark.parametrize("command", ["--help", *ALL_COMMANDS])  # --help: forkwire's own
def test_help_shows_values_as_a_user_writes_them(command: str) -> None:
    """No Python types (<int range>, <list[str]>, <str>) or reprs ((...,), <object at>) in
    help: placeholders are words (N, TEXT, URL, PATH) or the choices themselves."""
    done = run_cli(*dict.fromkeys([command, "--help"]))
    assert done.returncode == 0, done.stderr
    if re.search(r"--out[ ,]", done.stdout):
        assert "-o, --out" in done.stdout  # the same short option on every command
    for internal in ("<int", "<float", "<str>", "<path>", "<list[", "<bool>", "('", " at 0x"):
        assert internal not in done.stdout, (internal, done.stdout)


def test_python_m_forkwire_client_is_the_same_app() -> None:
    """`python -m forkwire.client` runs the commands `python -m forkwire` runs."""
    done = subprocess.run(
        [sys.executable, "-m", "forkwire.client", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == run_cli("--help").stdout


def test_the_commands_are_listed_in_their_order() -> None:
    """forkwire --help lists the commands as before (calc first, demo), then stats, ping."""
    done = run_cli("--help")
    names = [line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines()[1:]]
    assert names == [*ALL_COMMANDS]


@pytest.mark.parametrize("command", ["calc", "report"])
def test_the_environment_picks_the_server(command: str, tmp_path: Path) -> None:
    """FORKWIRE_HOST and FORKWIRE_PORT are where a command goes when no option says."""
    port = free_port()
    ops = tmp_path / "ops.txt"
    ops.write_text("1 + 1\n", encoding="utf-8")
    args = {
        "calc": ["calc", str(ops), "-o", str(tmp_path / "r.txt")],
        "report": ["report", "--out", str(tmp_path / "report")],
    }[command]
    done = run_cli(*args, env={"FORKWIRE_HOST": "127.0.0.1", "FORKWIRE_PORT": str(port)})
    assert done.returncode == 1
    assert f"cannot connect to 127.0.0.1:{port}" in done.stderr
