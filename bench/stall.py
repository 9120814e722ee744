"""How long one large job stalls everyone else: a small calc's latency while it runs.

Run as ``python -m bench.stall [N]`` (N expressions in the large job, 262,144 by default,
half of them errors). A ``forkwire-server`` subprocess gets the large job from a client in
its own process (so decoding that reply does not stall the measuring client), while this
process sends one-expression calcs back to back and reports their median, p99 and max.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import sys
import time
from multiprocessing.synchronize import Event

from forkwire.client.local import LocalServer
from forkwire.protocol import Calc, ClientConnection, Reply

Peer = tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientConnection]


async def connect(port: int) -> Peer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, ClientConnection()


async def ask(peer: Peer, message: Calc) -> Reply:
    reader, writer, conversation = peer
    writer.write(conversation.send(message))
    await writer.drain()
    while (reply := conversation.next_event()) is None:
        conversation.receive_data(await reader.read(1 << 20))
    return reply


def large_job(port: int, size: int, done: Event) -> None:
    async def run() -> None:
        peer = await connect(port)
        ops = ["7*6" if i % 2 else "1/0" for i in range(size)]
        started = time.perf_counter()
        reply = await ask(peer, Calc(id=1, ops=ops))
        took = time.perf_counter() - started
        print(f"large job: {size} expressions, {type(reply).__name__}, {took:.2f} s")

    asyncio.run(run())
    done.set()


async def main(size: int) -> None:
    server = await LocalServer.start(
        "--db", "memory://", "--max-frame", str(8 << 20), "--job-timeout", "60"
    )
    try:
        small = await connect(server.port)
        await ask(small, Calc(id=0, ops=["1+1"]))
        context = multiprocessing.get_context("fork")
        done = context.Event()
        sender = context.Process(target=large_job, args=(server.port, size, done))
        sender.start()
        latencies: list[float] = []
        while not done.is_set():
            started = time.perf_counter()
            await ask(small, Calc(id=len(latencies) + 1, ops=["1+1"]))
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
        sender.join()
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        print(
            f"small calcs meanwhile: {len(latencies)}, median "
            f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.0f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 262_144))
