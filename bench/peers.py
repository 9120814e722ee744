"""``python -m bench.peers``: the sensor fleet against the brokers a user would pick instead.

In one run on this machine, side by side, each with 50 streams and at most 5 messages
sent and not yet acknowledged:

- ``forkwire sensors`` as a user runs it (``--count 50 --period 0.001``, 5 slots, SQLite
  at default durability), with the default ``--batch`` and with ``--batch 1``, and once
  more against a server started with ``--durability full`` (an fsync per commit);
- MQTT QoS 1 through mosquitto (paho-mqtt) and NATS JetStream with a file stream
  (nats-py), driven the same way (``bench/brokers.py``).

For each: readings acknowledged per second in steady state (the CLI's: counted by the
server over the middle of the run, start-up and the drain at the end left out), then the
ack latency p50/p99 at half that rate (forkwire: from each reading's probe to its ack,
time in the outbox included; the brokers: from publish to acknowledgement). It prints the
ratios. A broker that is not there is said so, and the rest is still measured.

This machine's speed wanders by a factor of two from one ten seconds to the next (a
shared virtual machine), so the peers are measured in turn, ``--rounds`` times over, and
each keeps its best round: a ratio then compares each at its best in the same minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.brokers import Measured, mqtt, nats
from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.protocol import Stat, Stats, StatsResult

SENSORS = 50
WINDOW = 5


async def _stored(port: int) -> int:
    connection = await Connection.open("127.0.0.1", port, client="bench")
    async with connection:
        reply = await connection.request(Stats())
    assert isinstance(reply, StatsResult)
    return int(reply.counters.get(Stat.READINGS_STORED, 0))


async def _fleet(
    port: int, workdir: Path, name: str, seconds: float, batch: int | None, period: float
) -> tuple[float, dict[str, object]]:
    """Run the CLI for ``seconds``; the server's stored rate over its middle, and the
    CLI's JSON summary."""
    args = [sys.executable, "-m", "forkwire", "--log-level", "warning", "sensors"]
    args += ["--count", str(SENSORS), "--period", str(period), "--slots", str(WINDOW)]
    args += ["--duration", str(seconds), "--port", str(port), "--no-live", "--json"]
    args += ["--outbox", str(workdir / f"{name}.sqlite")]
    if batch is not None:
        args += ["--batch", str(batch)]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    margin = min(2.0, seconds / 5)
    await asyncio.sleep(margin)
    first, started = await _stored(port), time.perf_counter()
    await asyncio.sleep(seconds - 2 * margin)
    last, ended = await _stored(port), time.perf_counter()
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"forkwire sensors failed ({proc.returncode})")
    return (last - first) / (ended - started), json.loads(out)


async def forkwire(seconds: float, batch: int | None, label: str, *server: str) -> Measured:
    """The CLI at full speed, then at half that rate, against a server with these options."""
    result = Measured(label)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        store = f"sqlite:///{workdir / 'store.sqlite'}"
        local = await LocalServer.start("--no-udp", "--db", store, *server)
        try:
            rate, _ = await _fleet(local.port, workdir, "full", seconds, batch, 0.001)
            half_period = SENSORS / (rate / 2)
            _, summary = await _fleet(local.port, workdir, "half", seconds, batch, half_period)
        finally:
            await local.stop()
    result.rate = rate
    p50, p99 = summary.get("ack_p50_ms"), summary.get("ack_p99_ms")
    result.p50_ms = float(p50) if isinstance(p50, int | float) else None
    result.p99_ms = float(p99) if isinstance(p99, int | float) else None
    return result


def _best(runs: list[Measured]) -> Measured:
    measured = [run for run in runs if run.rate is not None]
    return max(measured, key=lambda run: run.rate or 0.0) if measured else runs[0]


def _show(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    """Measure every peer in this run and print the table and the ratios."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every peer")
    options = parser.parse_args()
    seconds = options.seconds
    print(
        f"{SENSORS} streams, {WINDOW} in flight, {seconds:g} s a run, on this machine", flush=True
    )
    rounds: list[list[Measured]] = [[], [], [], [], []]
    for turn in range(options.rounds):
        print(f"round {turn + 1} of {options.rounds}", flush=True)
        rounds[0].append(asyncio.run(forkwire(seconds, None, "forkwire sensors (default)")))
        rounds[1].append(asyncio.run(forkwire(seconds, 1, "forkwire sensors --batch 1")))
        rounds[2].append(mqtt(SENSORS, WINDOW, seconds))
        rounds[3].append(nats(SENSORS, WINDOW, seconds))
        full = "forkwire sensors, server --durability full"
        rounds[4].append(asyncio.run(forkwire(seconds, None, full, "--durability", "full")))
    results = [_best(runs) for runs in rounds]
    print(f"{'':44} {'acked/s':>10} {'p50 ms':>8} {'p99 ms':>8}   (latency at half that rate)")
    for r in results:
        if r.missing:
            print(f"{r.name:44} {'missing: ' + r.missing}")
            continue
        print(
            f"{r.name:44} {_show(r.rate, ',.0f'):>10} {_show(r.p50_ms, '.2f'):>8} "
            f"{_show(r.p99_ms, '.2f'):>8}"
        )
    fleet, fleet1, *peers, fsynced = results
    for peer in peers:
        if peer.rate is None:
            continue
        for mine in (fleet, fleet1):
            if mine.rate is not None:
                print(f"ratio  {mine.name} / {peer.name}: {mine.rate / peer.rate:.2f}x")
    if fleet.rate and fsynced.rate:
        print(f"ratio  {fsynced.name} / {fleet.name}: {fsynced.rate / fleet.rate:.2f}x")


if __name__ == "__main__":
    main()
