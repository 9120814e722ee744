"""The calc client over UDP against a lossy fake server: retries and giving up."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from forkwire.client.calc.run import run_calc_udp
from forkwire.client.udp import UdpConnection
from forkwire.protocol import Calc, CalcResult, decode_datagram, decode_request, pack


class LossyServer(asyncio.DatagramProtocol):
    """Answers calc jobs with the length of each op, ignoring the first ``drop`` tries."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.seen: dict[int, int] = {}
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = decode_request(decode_datagram(data))
        assert isinstance(message, Calc)
        self.seen[message.id] = self.seen.get(message.id, 0) + 1
        if self.seen[message.id] > self.drop:
            answer = CalcResult(id=message.id, results=[len(op) for op in message.ops])
            self.transport.sendto(pack(answer), addr)


async def serve(drop: int) -> tuple[LossyServer, int]:
    """A lossy fake server on a free loopback port."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: LossyServer(drop), local_addr=("127.0.0.1", 0)
    )
    return protocol, transport.get_extra_info("sockname")[1]


async def test_lost_requests_are_retried_and_answers_stay_in_order() -> None:
    """Every job's first datagram is lost; the retry is answered; output is in input order."""
    server, port = await serve(drop=1)
    udp = await UdpConnection.open("127.0.0.1", port)
    lines = [f"{'1+' * i}1\n" for i in range(100)]
    out = io.StringIO()
    try:
        summary = await run_calc_udp(lines, out, udp, datagram=300, window=4, wait=0.05)
    finally:
        udp.close()
        server.transport.close()
    assert out.getvalue().splitlines() == [str(len(line) - 1) for line in lines]
    assert summary.jobs == len(server.seen) > 1
    assert summary.retries == summary.jobs
    assert summary.given_up == 0


async def test_jobs_never_answered_are_given_up_as_error_lines() -> None:
    """A server that never answers: after every try each line is an 'error: lost:' line."""
    server, port = await serve(drop=100)
    udp = await UdpConnection.open("127.0.0.1", port)
    out = io.StringIO()
    try:
        summary = await run_calc_udp(["1+1\n", "2*3\n"], out, udp, wait=0.02, tries=3)
    finally:
        udp.close()
        server.transport.close()
    assert out.getvalue().splitlines() == [
        "error: lost: no answer over UDP after 3 tries",
        "error: lost: no answer over UDP after 3 tries",
    ]
    assert summary.given_up == 1
    assert summary.retries == 2
    assert server.seen == {0: 3}
