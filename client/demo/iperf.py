"""The iperf3 reference: loopback UDP loss on the kernel path to a C receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import Callable
from typing import Any, Final

from forkwire.client.demo.config import REFERENCE_LABEL, DemoConfig
from forkwire.client.demo.metrics import Rate, _rounded

_IPERF_MAX_SECONDS: Final = 10


async def _iperf_reference(
    iperf: str, config: DemoConfig, packet_bytes: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """iperf3 over loopback UDP at each rate, with our datagram size: loss on the kernel
    path to a C receiver, which shows how much of UDP's loss is the receiver's speed."""
    longest = 2 if config.quick else _IPERF_MAX_SECONDS
    rows: list[dict[str, Any]] = []
    for rate in config.run_rates:
        if rate == "max":
            seconds, bits = 1, 0  # iperf3: -b 0 is unlimited
        else:
            seconds = min(longest, max(1, math.ceil(config.run_count / rate)))
            bits = math.ceil(rate * packet_bytes * 8)
        say(f"iperf3 udp {rate}{'' if rate == 'max' else '/s'}: {seconds} s")
        rows.append(await _iperf_run(iperf, rate, bits, packet_bytes, seconds))
    return rows


async def _iperf_run(
    iperf: str, rate: Rate, bits: int, packet_bytes: int, seconds: int
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": REFERENCE_LABEL,
        "tool": "iperf3",
        "transport": "udp",
        "offered_rate": rate,
        "packet_bytes": packet_bytes,
        "seconds": seconds,
        "sent": None,
        "lost": None,
        "loss_pct": None,
        "jitter_ms": None,
        "achieved_rate": None,
        "error": None,
    }
    port = _free_port()
    quiet = asyncio.subprocess.DEVNULL
    server = await asyncio.create_subprocess_exec(
        iperf, "-s", "-1", "-p", str(port), stdin=quiet, stdout=quiet, stderr=quiet
    )
    try:
        data: dict[str, Any] = {}
        # The server needs a moment to listen; a refused client does not use up its -1.
        for _attempt in range(50):
            client = await asyncio.create_subprocess_exec(
                iperf, "-c", "127.0.0.1", "-u", "-b", str(bits), "-l", str(packet_bytes),
                "-t", str(seconds), "-J", "-p", str(port),
                stdin=quiet, stdout=asyncio.subprocess.PIPE, stderr=quiet,
            )  # fmt: skip
            try:
                out, _ = await asyncio.wait_for(client.communicate(), seconds + 15)
            except TimeoutError:
                client.kill()
                await client.wait()
                row["error"] = "iperf3 client timed out"
                return row
            try:
                data = json.loads(out)
            except ValueError:
                data = {"error": out.decode(errors="replace").strip()[:200] or "no output"}
            error = str(data.get("error") or "")
            if "connect" in error.lower() and server.returncode is None:
                await asyncio.sleep(0.1)
                continue
            break
        if data.get("error"):
            row["error"] = str(data["error"])
            return row
        end = data.get("end", {})
        # Newer iperf3 names the receiver's side; older ones put it in "sum".
        summary = end.get("sum_received") or end.get("sum") or {}
        packets, lost = summary.get("packets"), summary.get("lost_packets")
        if not isinstance(packets, int) or not isinstance(lost, int):
            row["error"] = "no packet counts in iperf3's output"
            return row
        span = summary.get("seconds") or seconds
        row.update(
            sent=packets,
            lost=lost,
            loss_pct=round(100 * lost / packets, 4) if packets else 0.0,
            jitter_ms=_rounded(summary.get("jitter_ms"), 3),
            achieved_rate=round(packets / span, 1) if span else None,
        )
        return row
    finally:
        if server.returncode is None:
            # With -1 it exits after its one test. Signalling it without waiting would race
            # that exit (Popen reaps a dead child before signalling it, behind asyncio's back).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait(), 2.0)
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 5.0)
            except TimeoutError:
                server.kill()
                await server.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
