"""``forkwire stats``, ``forkwire ping``, ``--version``, and the client's log options:
--log-format console|json, before or after the command, colours only on a terminal
without NO_COLOR."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from fwtest import free_port, run_cli
from test_terminal_output import run_in_terminal

import forkwire
from forkwire.client.cli.main import hoist_global_options
from forkwire.client.local import LocalServer

ANSI = "\x1b["


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"forkwire {forkwire.__version__}\n"


async def test_stats_as_a_table_and_as_json(server: LocalServer) -> None:
    port = str(server.port)
    table, raw = await asyncio.gather(
        asyncio.to_thread(run_cli, "stats", "--port", port),
        asyncio.to_thread(run_cli, "stats", "--port", port, "--json"),
    )
    assert table.returncode == 0, table.stderr
    assert "connections_total" in table.stdout
    assert f"forkwire server 127.0.0.1:{port}" in table.stdout
    assert raw.returncode == 0, raw.stderr
    counters = json.loads(raw.stdout)
    assert counters["pid"] == server.pid
    assert counters["connections_open"] >= 1


async def test_ping_reports_each_round_trip_and_the_servers_version(
    server: LocalServer,
) -> None:
    done = await asyncio.to_thread(
        run_cli, "ping", "--port", str(server.port), "--count", "3", "--interval", "0"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"forkwire/{forkwire.__version__}" in lines[0]
    assert [line.split(":")[0] for line in lines[1:4]] == [
        f"pong {n} from 127.0.0.1" for n in (1, 2, 3)
    ]
    assert lines[4].startswith("3 pings, 3 pongs, rtt min/avg/max = ")


def test_ping_without_a_server_is_one_line_and_status_1() -> None:
    done = run_cli("ping", "--port", str(free_port()))
    assert done.returncode == 1
    assert done.stderr.startswith("forkwire: cannot connect to 127.0.0.1:")
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("where", ["before", "after"])
async def test_json_logs_with_utc_iso_timestamps_before_or_after_the_command(
    server: LocalServer, where: str
) -> None:
    options = ["--log-format", "json", "--log-level=debug"]
    command = ["ping", "--port", str(server.port), "-c", "1"]
    args = [*options, *command] if where == "before" else [*command, *options]
    done = await asyncio.to_thread(run_cli, *args)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    (connected,) = [e for e in events if e["event"] == "connected"]
    assert connected["level"] == "debug"
    stamp = connected["timestamp"]
    assert stamp.endswith("Z")
    when = datetime.fromisoformat(stamp)
    assert when.tzinfo is not None
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


def test_global_options_move_in_front_of_the_command_and_nothing_after_double_dash() -> None:
    assert hoist_global_options(["calc", "f", "--log-level", "debug", "-o", "x"]) == [
        *("--log-level", "debug", "calc", "f", "-o", "x")
    ]
    assert hoist_global_options(["calc", "--log-format=json", "--", "--log-level"]) == [
        *("--log-format=json", "calc", "--", "--log-level")
    ]


async def test_console_logs_are_coloured_only_on_a_terminal_without_no_color(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["ping", "--port", str(server.port), "-c", "1", "--log-level", "debug"]
    piped = await asyncio.to_thread(run_cli, *args)
    assert piped.returncode == 0, piped.stderr
    assert "connected" in piped.stderr
    assert ANSI not in piped.stderr
    status, coloured = await asyncio.to_thread(run_in_terminal, *args)
    assert status == 0, coloured
    assert ANSI in coloured  # the check below can see colours
    monkeypatch.setenv("NO_COLOR", "1")  # the child's environment is ours
    status, plain = await asyncio.to_thread(run_in_terminal, *args)
    assert status == 0, plain
    assert "connected" in plain
    assert ANSI not in plain
