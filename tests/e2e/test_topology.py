"""The compose topology without containers: one PostgreSQL store, three servers and haproxy
run with the repository's own deploy/haproxy.cfg (the file docker-compose.yml mounts), a
sensor fleet streaming through the balancer while the server it is connected to is
SIGKILLed and restarted on its port, then ``forkwire calc`` through the balancer.

haproxy is the Debian package of that name; .ci/run installs it when missing. Elsewhere the
test skips, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fwtest import REPO, free_port, postgres_schema, run_cli

from forkwire.client.local import LocalServer
from forkwire.server.interpreter import ExpressionError, evaluate

pytestmark = pytest.mark.postgres

HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
WAIT = 20.0  # the bound of every wait below, in seconds
SENSORS = "forkwire-sensors"  # the client name in the fleet's hello


def healthcheck() -> ModuleType:
    """deploy/healthcheck.py, the container's check, to ask the balancer for a welcome."""
    spec = importlib.util.spec_from_file_location("healthcheck", REPO / "deploy" / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def haproxy_binary() -> str:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        reason = "haproxy is not installed (Debian package haproxy; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and this is CI")
        pytest.skip(reason)
    return haproxy


async def until(condition: Callable[[], Any], what: str, wait: float = WAIT) -> Any:
    """Poll ``condition`` (sync or async) until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + wait
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {wait} s: {what}")
        await asyncio.sleep(0.1)


def open_conns(server: LocalServer, client: str) -> set[int]:
    """Ids of the server's open connections whose hello named ``client`` (the server logs
    hellos at debug level; the balancer's health checks name themselves haproxy-check)."""
    opened = {e["conn"] for e in server.named("hello") if e.get("client") == client}
    closed = {e["conn"] for e in server.named("connection_closed")}
    return opened - closed


def clients_served(server: LocalServer, client: str) -> int:
    return sum(1 for e in server.named("hello") if e.get("client") == client)


@contextlib.asynccontextmanager
async def balancer(ports: list[int], log: Path) -> AsyncIterator[int]:
    """haproxy with deploy/haproxy.cfg in front of ``ports``; yields its port once it
    answers a hello with a welcome (so at least one server is up behind it)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update({f"FW{i}": f"127.0.0.1:{p}" for i, p in enumerate(ports, 1)})
    env["BALANCER_BIND"] = f"127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            haproxy_binary(),
            *("-db", "-f", str(HAPROXY_CFG)),  # -db: in the foreground, as a child of ours
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    check = healthcheck().check
    try:

        async def welcomed() -> bool:
            if proc.returncode is not None:
                said = await asyncio.to_thread(log.read_text)
                pytest.fail(f"haproxy exited {proc.returncode}: {said}")
            return await asyncio.to_thread(check, "127.0.0.1", port) is None

        await until(welcomed, "haproxy answering with a forkwire welcome")
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def start_server(url: str, port: int) -> LocalServer:
    # Debug level: the hello events name each connection's client. No UDP: free_port()
    # found the TCP port free, not the UDP one, and UDP is not balanced anyway.
    return await LocalServer.start(
        "--db", url, "--port", str(port), "--no-udp", "--log-level", "debug"
    )


def expected(line: str) -> str:
    """The results file's line for ``line``: the interpreter's own answer."""
    try:
        return repr(evaluate(line))
    except ExpressionError as exc:
        return f"error: {exc.code}: {exc.message}"


def small_workload(count: int) -> list[str]:
    rng = random.Random(13)
    ops = ["+", "-", "*", "/"]
    lines = []
    for index in range(count):
        terms = [str(rng.randint(-50, 50)) for _ in range(rng.randint(2, 5))]
        line = terms[0]
        for term in terms[1:]:
            line += f" {rng.choice(ops)} {term}"
        if index % 7 == 0:
            line = f"({line}) * 2.5"
        lines.append(line)
    lines += ["1 / 0", "2 ** 10", "(1 + 2", "7 - 2 - 1"]
    return lines


async def stored(url: str) -> dict[str, list[int]]:
    """Every sensor's stored seqs, in order, duplicates kept (the query does not hide them)."""
    import asyncpg

    dsn, schema = url.split("?schema=")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(f'SELECT sensor, producer, seq FROM "{schema}".readings')
    finally:
        await conn.close()
    seqs: dict[str, list[int]] = {}
    producers: dict[str, set[str]] = {}
    for row in rows:
        seqs.setdefault(row["sensor"], []).append(row["seq"])
        producers.setdefault(row["sensor"], set()).add(row["producer"])
    assert all(len(p) == 1 for p in producers.values()), producers
    return {sensor: sorted(values) for sensor, values in seqs.items()}


async def test_fleet_and_calc_through_haproxy_survive_a_sigkilled_server(
    tmp_path: Path,
) -> None:
    haproxy_binary()
    async with postgres_schema() as url:
        ports = [free_port() for _ in range(3)]
        servers: list[LocalServer] = []
        fleet = None
        try:
            for port in ports:
                servers.append(await start_server(url, port))
            async with balancer(ports, tmp_path / "haproxy.log") as port:
                outbox = tmp_path / "outbox.sqlite"
                fleet = await asyncio.create_subprocess_exec(
                    sys.executable,
                    *("-m", "forkwire", "sensors", "--port", str(port), "--count", "5"),
                    *("--period", "0.05", "--duration", "6", "--outbox", str(outbox)),
                    "--json",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=REPO,
                )

                # The server the fleet's connection landed on, once readings are stored.
                def fleets_server() -> list[int]:
                    return [i for i, s in enumerate(servers) if open_conns(s, SENSORS)]

                victim = (await until(fleets_server, "the fleet connected through haproxy"))[0]

                async def some_stored() -> bool:
                    return sum(map(len, (await stored(url)).values())) >= 30

                await until(some_stored, "30 readings stored")
                await servers[victim].stop(signal.SIGKILL)
                survivors = [s for i, s in enumerate(servers) if i != victim]
                # The fleet reconnects through the balancer, to another server...
                await until(
                    lambda: any(open_conns(s, SENSORS) for s in survivors),
                    "the fleet reconnected to another server",
                )
                # ...and the killed one comes back on its port, as a supervisor would do.
                servers[victim] = await start_server(url, ports[victim])
                out, err = await asyncio.wait_for(fleet.communicate(), 60)
                assert fleet.returncode == 0, err.decode()

                source = tmp_path / "ops.txt"
                lines = small_workload(600)
                source.write_text("\n".join(lines) + "\n")
                results = tmp_path / "results.txt"
                # Three connections through leastconn land on the three servers, the
                # restarted one too once the balancer's check has seen it up again.
                await until(
                    lambda: clients_served(servers[victim], "haproxy-check") >= 2,
                    "the balancer checking the restarted server",
                )
                calc = await asyncio.to_thread(
                    run_cli,
                    *("calc", str(source), "-o", str(results), "--port", str(port)),
                    *("--batch", "20", "--connections", "3"),
                    timeout=60,
                )
            assert calc.returncode == 0, calc.stderr
        finally:
            if fleet is not None and fleet.returncode is None:
                fleet.kill()
                await fleet.wait()
            for server in servers:
                await server.stop()
        # Every server exits cleanly on SIGTERM and logged no error but the refused or
        # cut connections of the kill.
        assert all(s.proc.returncode == 0 for s in servers), [s.proc.returncode for s in servers]

        summary = json.loads(out)
        seqs = await stored(url)

    # Nothing twice: each sensor's seqs are distinct; nothing lost: they run 0..n-1 with
    # no gap, cover everything acked, and whatever was probed and not acked is still in
    # the outbox to be resent (stored once more would be a duplicate key, kept once).
    from forkwire.client.sensors.outbox import Outbox

    assert summary["conflicts"] == 0
    assert summary["reconnects"] >= 1
    assert sorted(seqs) == [f"sensor-{i}" for i in range(5)]
    with Outbox(tmp_path / "outbox.sqlite") as box:
        for sensor in summary["sensors"]:
            name = sensor["name"]
            assert seqs[name] == list(range(len(seqs[name]))), name
            assert len(seqs[name]) >= sensor["acked"] >= 20, name
            unsent = [r.seq for r in box.pending(name)]
            assert unsent == list(range(sensor["acked"], sensor["probed"])), name

    answers = results.read_text().splitlines()
    assert answers == [expected(line) for line in lines]
    # Every server ran some of the jobs (each logs a job_done per job).
    jobs = [len(s.named("job_done")) for s in servers]
    assert all(jobs), jobs
    assert sum(jobs) >= -(-len(lines) // 20)
