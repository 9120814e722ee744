"""The peers of ``bench.peers``: MQTT QoS 1 through mosquitto and NATS JetStream.

Each is driven the way ``forkwire sensors`` is: ``sensors`` streams (topics, subjects),
at most ``window`` messages sent and not yet acknowledged, small JSON readings. Two runs
each: as fast as the window allows (readings acked per second), then paced at half that
rate (ack latency per message, publish to acknowledgement).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

#: Readings look like forkwire's: a sensor, a seq, a ts and an int value.
PAYLOAD = '{{"sensor":"sensor-{i}","seq":{seq},"ts":{ts},"value":{value}}}'


@dataclass
class Measured:
    """A peer's two runs: the rate it acked at, and its latency at half that rate."""

    name: str
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    missing: str | None = None


def reachable(port: int) -> bool:
    """Something listens on 127.0.0.1:port."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
        return True
    return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# --- MQTT ---------------------------------------------------------------------------------


def mqtt(sensors: int, window: int, seconds: float, port: int = 1883) -> Measured:
    """paho-mqtt, QoS 1, ``max_inflight_messages = window``, through mosquitto."""
    result = Measured("MQTT QoS 1 (mosquitto, paho-mqtt)")
    try:
        import paho.mqtt.client as paho
    except ImportError:
        result.missing = "paho-mqtt is not installed (pip install paho-mqtt)"
        return result
    if not reachable(port):
        result.missing = f"no MQTT broker on 127.0.0.1:{port} (apt-get install mosquitto)"
        return result
    rate, _ = _mqtt_run(paho, sensors, window, seconds, None, port)
    _, latencies = _mqtt_run(paho, sensors, window, seconds, rate / 2, port)
    result.rate = rate
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    return result


def _mqtt_run(
    paho: Any, sensors: int, window: int, seconds: float, pace: float | None, port: int
) -> tuple[float, list[float]]:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    client.max_inflight_messages_set(window)
    # No lock of ours around publish(): paho calls on_publish holding its own, and two locks
    # taken in opposite orders deadlock. Sends and acks are logged and paired afterwards.
    sends: list[tuple[int, float]] = []
    acks: list[tuple[int, float]] = []
    room = threading.Semaphore(window)

    def on_publish(_client: Any, _data: Any, mid: int, *_rest: Any) -> None:
        acks.append((mid, time.perf_counter()))
        room.release()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        seq = 0
        start = time.perf_counter()
        while (now := time.perf_counter()) - start < seconds:
            if pace is not None:
                due = start + seq / pace
                if due > now:
                    time.sleep(due - now)
            room.acquire()
            i = seq % sensors
            body = PAYLOAD.format(i=i, seq=seq // sensors, ts=time.time(), value=seq % 201 - 100)
            sent = time.perf_counter()
            info = client.publish(f"bench/sensor-{i}", body, qos=1)
            sends.append((info.mid, sent))
            seq += 1
        for _ in range(window):  # wait for the last acks
            room.acquire(timeout=5)
        elapsed = time.perf_counter() - start
    finally:
        client.loop_stop()
        client.disconnect()
    # A message id comes back after at most `window` others, so the n-th ack of an id
    # answers its n-th send.
    waiting: dict[int, list[float]] = {}
    for mid, sent in sends:
        waiting.setdefault(mid, []).append(sent)
    latencies = [acked - waiting[mid].pop(0) for mid, acked in acks if waiting.get(mid)]
    return len(acks) / elapsed, latencies


# --- NATS JetStream -----------------------------------------------------------------------


def nats(sensors: int, window: int, seconds: float, port: int = 4222) -> Measured:
    """nats-py, JetStream with a file stream, ``window`` publishes awaiting their ack."""
    result = Measured("NATS JetStream, file stream (nats-py)")
    try:
        import nats as nats_py
    except ImportError:
        result.missing = "nats-py is not installed (pip install nats-py)"
        return result
    if not reachable(port):
        result.missing = f"no NATS server on 127.0.0.1:{port} (apt-get install nats-server)"
        return result
    try:
        rate, _ = asyncio.run(_nats_run(nats_py, sensors, window, seconds, None, port))
        _, latencies = asyncio.run(_nats_run(nats_py, sensors, window, seconds, rate / 2, port))
    except Exception as exc:  # JetStream disabled, no permission: say so, measure the rest
        result.missing = f"JetStream unusable: {type(exc).__name__}: {exc}"
        return result
    result.rate = rate
    result.p50_ms = percentile(latencies, 50) * 1000
    result.p99_ms = percentile(latencies, 99) * 1000
    return result


async def _nats_run(
    nats_py: Any, sensors: int, window: int, seconds: float, pace: float | None, port: int
) -> tuple[float, list[float]]:
    connection = await nats_py.connect(f"nats://127.0.0.1:{port}")
    stream = "FORKWIRE_BENCH"
    try:
        jetstream = connection.jetstream()
        with contextlib.suppress(Exception):
            await jetstream.delete_stream(stream)
        await jetstream.add_stream(name=stream, subjects=["bench.>"], storage="file")
        latencies: list[float] = []
        start = time.perf_counter()
        counter = iter(range(10**12))

        async def publisher() -> None:
            while time.perf_counter() - start < seconds:
                seq = next(counter)
                if pace is not None:
                    delay = start + seq / pace - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                i = seq % sensors
                body = PAYLOAD.format(
                    i=i, seq=seq // sensors, ts=time.time(), value=seq % 201 - 100
                )
                sent = time.perf_counter()
                await jetstream.publish(f"bench.sensor-{i}", body.encode())
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(publisher() for _ in range(window)))
        elapsed = time.perf_counter() - start
        with contextlib.suppress(Exception):
            await jetstream.delete_stream(stream)
    finally:
        await connection.close()
    return len(latencies) / elapsed, latencies


def as_json(results: list[Measured]) -> str:
    """The measurements as one JSON line (for the record)."""
    return json.dumps([r.__dict__ for r in results])
