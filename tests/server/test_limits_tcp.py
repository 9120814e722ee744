"""The TCP connection layer's limits, attacked over real sockets on 127.0.0.1.

Each test starts a server child with small limits (so the attack is cheap), attacks it as
a hostile client would, and checks that the server's memory stays bounded and that a
normal client is still served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

from forkwire.client.connection import Connection
from forkwire.client.local import LocalServer
from forkwire.protocol import (
    Calc,
    CalcResult,
    ClientConnection,
    Error,
    ErrorCode,
    Hello,
    Ping,
    Pong,
    Reply,
    Stats,
    StatsResult,
    Welcome,
    pack,
)

#: Every wait is bounded by this; only a hang comes near it.
WAIT = 10.0
MiB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident bytes of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *args: str) -> AsyncIterator[LocalServer]:
    server = await LocalServer.start("--db", f"sqlite:///{tmp_path / 'r.sqlite'}", *args)
    try:
        yield server
    finally:
        await server.stop()


def raw(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        # Set before connect, so the window the server sees is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    return sock


async def calc_answered(port: int, ops: list[str] | None = None) -> CalcResult:
    """A normal client's calc: connect, hello, one job, within WAIT seconds."""
    async with asyncio.timeout(WAIT):
        connection = await Connection.open("127.0.0.1", port, client="normal")
        try:
            reply = await connection.request(Calc(id=7, ops=ops or ["1 + 2"]))
        finally:
            await connection.close()
    assert isinstance(reply, CalcResult), reply
    return reply


def send_until_blocked(sock: socket.socket, frame: bytes, seconds: float) -> int:
    """Send ``frame`` again and again for up to ``seconds``, or until the socket has not
    taken a byte for a second (the server stopped reading); return the bytes sent."""
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    view = memoryview(frame)
    while time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent % len(frame) :])
        except TimeoutError:
            break
    return sent


async def test_a_client_that_never_reads_is_held_back_not_buffered(tmp_path: Path) -> None:
    """Attack 1: frames of bad expressions (each answered ~20x its size) from a client that
    never reads. Once max_unsent bytes wait for it, the server starts none of its jobs and
    reads no more of its frames: its RSS stays bounded, and a second client's calc is
    answered meanwhile."""
    async with running(tmp_path, "--workers", "2", "--max-unsent", str(MiB // 4)) as server:
        await calc_answered(server.port)
        before = rss(server.pid)
        base = (await stats(server.port))["jobs_started"]
        # 50,000 "(": a 0.2 MiB frame answered by ~4 MiB of syntax errors.
        frame = pack(Calc(id=1, ops=["("] * 50_000))
        attacker = raw(server.port, rcvbuf=4096)
        try:
            sent = await asyncio.to_thread(send_until_blocked, attacker, frame, 2.0)
            assert sent >= 2 * len(frame)  # it read some: the replies waiting exceed the bound
            held = (await stats(server.port))["jobs_started"]
            await asyncio.sleep(1.0)
            # Its first answer is over the bound: no job of it started since (each takes
            # under a second; without backpressure they ran on, and their answers piled up).
            assert (await stats(server.port))["jobs_started"] == held
            assert held - base <= 2
            reply = await calc_answered(server.port)
            assert reply.results == [3]
            assert rss(server.pid) - before < 100 * MiB
        finally:
            attacker.close()
        # The attacker gone, the server serves as before.
        assert (await calc_answered(server.port)).results == [3]


def greet(port: int) -> tuple[socket.socket, Reply]:
    """Connect, say hello, and return the socket and the server's first reply."""
    sock = raw(port)
    sock.settimeout(WAIT)
    sock.sendall(pack(Hello(client="idle")))
    return sock, read_reply(sock)


def read_reply(sock: socket.socket) -> Reply:
    conversation = ClientConnection()
    while (reply := conversation.next_event()) is None:
        conversation.receive_data(sock.recv(65536))
    return reply


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


async def closed(server: LocalServer, count: int, event: str = "connection_closed") -> None:
    """Wait until the server logged ``count`` connections closed (or another event)."""
    async with asyncio.timeout(WAIT):
        while len(server.named(event)) < count:  # noqa: ASYNC110 - a log to poll
            await asyncio.sleep(0.05)


async def stats(port: int) -> dict[str, int | float]:
    async with asyncio.timeout(WAIT):
        connection = await Connection.open("127.0.0.1", port)
        try:
            reply = await connection.request(Stats())
        finally:
            await connection.close()
    assert isinstance(reply, StatsResult)
    return reply.counters


async def test_past_max_connections_a_client_is_told_busy_and_closed(tmp_path: Path) -> None:
    async with running(tmp_path, "--max-connections", "3") as server:
        held = [await asyncio.to_thread(greet, server.port) for _ in range(3)]
        try:
            assert all(isinstance(reply, Welcome) for _, reply in held)
            sock, reply = await asyncio.to_thread(greet, server.port)
            with sock:
                assert isinstance(reply, Error)
                assert reply.code == ErrorCode.BUSY
                assert await asyncio.to_thread(closed_by_server, sock)
            assert held[0][1].limits["max_connections"] == 3
        finally:
            for sock, _ in held:
                sock.close()
        await closed(server, 3)
        # The held ones gone, a new client is served, and the refusal was counted.
        assert (await calc_answered(server.port)).results == [3]
        assert (await stats(server.port))["connections_refused"] == 1
        assert len(server.named("connections_refused")) == 1


async def test_descriptors_run_short_open_connections_are_served(tmp_path: Path) -> None:
    """Attack 3 under a low ``ulimit -n``: idle connections fill the descriptors. The ones
    past what is left are told busy (logged once, not per connection); the open ones are
    still served, a job included, and jobs_running stays right; when the idle ones leave,
    new clients are served again."""
    async with running(tmp_path, "--workers", "1") as server:
        first = await asyncio.to_thread(greet, server.port)
        in_use = len(os.listdir(f"/proc/{server.pid}/fd"))
        _, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
        # Room for a few dozen connections past the reserve the server keeps.
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (in_use + 80, hard))
        idle: list[socket.socket] = [first[0]]
        busy = 0
        try:
            for _ in range(150):
                sock, reply = await asyncio.to_thread(greet, server.port)
                if isinstance(reply, Welcome):
                    idle.append(sock)
                    continue
                sock.close()
                assert isinstance(reply, Error), reply
                assert reply.code == ErrorCode.BUSY
                busy += 1
                if busy == 10:
                    break
            assert busy == 10
            assert len(idle) > 5
            # A job on a connection that was open before: its pipe and child still fit.
            idle[0].sendall(pack(Calc(id=1, ops=["6 * 7"])))
            reply = await asyncio.to_thread(read_reply, idle[0])
            assert isinstance(reply, CalcResult)
            assert reply.results == [42]
        finally:
            for sock in idle:
                sock.close()
        await closed(server, len(idle))
        counters = await stats(server.port)
        assert counters["jobs_running"] == 0
        assert counters["connections_refused"] == 10
        assert len(server.named("connections_refused")) == 1  # not once per connection
        assert (await calc_answered(server.port)).results == [3]


def error_then_close(sock: socket.socket) -> Reply:
    """The server's next message, which must be followed by its close."""
    reply = read_reply(sock)
    assert closed_by_server(sock)
    return reply


TIMEOUTS = ("--hello-timeout", "0.3", "--idle-timeout", "0.3", "--frame-timeout", "0.3")


async def test_a_silent_connection_is_closed_after_the_hello_timeout(tmp_path: Path) -> None:
    async with running(tmp_path, *TIMEOUTS) as server:
        with raw(server.port) as sock:
            sock.settimeout(WAIT)
            reply = await asyncio.to_thread(error_then_close, sock)
        assert isinstance(reply, Error)
        assert reply.code == ErrorCode.IDLE_TIMEOUT
        assert "hello_timeout" in reply.message


async def test_an_idle_connection_is_closed_and_ping_keeps_it_open(tmp_path: Path) -> None:
    async with running(tmp_path, *TIMEOUTS) as server:
        sock, welcome = await asyncio.to_thread(greet, server.port)
        with sock:
            assert isinstance(welcome, Welcome)
            assert welcome.limits["idle_timeout"] == 0.3
            for n in range(8):  # 1.2 s, four idle timeouts, kept open by pings
                await asyncio.sleep(0.15)
                sock.sendall(pack(Ping(id=n)))
                assert await asyncio.to_thread(read_reply, sock) == Pong(id=n)
            reply = await asyncio.to_thread(error_then_close, sock)
        assert isinstance(reply, Error)
        assert reply.code == ErrorCode.IDLE_TIMEOUT
        assert (await stats(server.port))["connections_timed_out"] == 1


async def test_a_job_in_flight_is_not_idle(tmp_path: Path) -> None:
    """No idle clock while the server owes an answer: a job longer than idle_timeout is
    answered, then the clock starts."""
    async with running(tmp_path, "--idle-timeout", "0.1", "--workers", "1") as server:
        sock, _ = await asyncio.to_thread(greet, server.port)
        with sock:
            # Enough work to outlast the idle timeout several times over.
            ops = ["2 ** 4000 * 3 ** 2000 // 7 ** 900"] * 6000
            sock.sendall(pack(Calc(id=1, ops=ops)))
            started = time.monotonic()
            reply = await asyncio.to_thread(read_reply, sock)
            assert isinstance(reply, CalcResult), reply
            assert len(reply.results) == len(ops)
            took = time.monotonic() - started
            closing = await asyncio.to_thread(error_then_close, sock)
            assert isinstance(closing, Error)
            assert closing.code == ErrorCode.IDLE_TIMEOUT
        # The job outlasted the idle timeout several times over (about 0.5 s here), so
        # an idle clock that ran during it would have closed the connection first.
        assert took > 0.3, f"the job took only {took:.2f} s: make it longer"


async def test_partial_frames_are_dropped_after_the_frame_timeout(tmp_path: Path) -> None:
    """Attack 3, small: connections that send a header announcing 512 KiB and most of
    the body, then nothing (or a byte now and then): each is answered frame_timeout and
    closed, and what they sent is no longer held."""
    async with running(tmp_path, *TIMEOUTS) as server:
        await calc_answered(server.port)
        socks = []
        try:
            for _ in range(20):
                sock = raw(server.port)
                sock.settimeout(WAIT)
                sock.sendall((512 * 1024).to_bytes(4, "big") + b"x" * (512 * 1024 - 100))
                socks.append(sock)
            trickle = socks[0]
            for _ in range(4):  # a slow sender's bytes do not restart the frame's clock
                await asyncio.sleep(0.1)
                with contextlib.suppress(OSError):
                    trickle.send(b"y")
            for sock in socks:
                reply = await asyncio.to_thread(error_then_close, sock)
                assert isinstance(reply, Error)
                assert reply.code == ErrorCode.FRAME_TIMEOUT
        finally:
            for sock in socks:
                sock.close()
        await closed(server, 21)
        counters = await stats(server.port)
        assert counters["connections_timed_out"] == 20
        assert counters["connections_open"] == 1  # this one


#: A job of the child's own pace, a fraction of a second each (a real sum, no error).
SLOW_OPS = ["2 ** 4000 * 3 ** 2000 // 7 ** 900"] * 600


async def test_one_connections_pipeline_does_not_starve_another(tmp_path: Path) -> None:
    """Attack 6: connection A pipelines 20 jobs on one worker; B's small calc, sent once
    A's backlog waits, is answered after at most about one more of A's jobs, not after all
    of them (the runner's FIFO made B wait for A's whole backlog)."""
    async with running(tmp_path, "--workers", "1") as server:
        hog, _ = await asyncio.to_thread(greet, server.port)
        with hog:
            hog.sendall(b"".join(pack(Calc(id=n, ops=SLOW_OPS)) for n in range(20)))
            hog_replies: list[Reply] = []

            def read_hog() -> None:
                conversation = ClientConnection()
                while len(hog_replies) < 20:
                    conversation.receive_data(hog.recv(1 << 20))
                    while (reply := conversation.next_event()) is not None:
                        hog_replies.append(reply)

            reader = asyncio.create_task(asyncio.to_thread(read_hog))
            async with asyncio.timeout(WAIT):
                while not hog_replies:  # noqa: ASYNC110 - a thread's list to poll
                    await asyncio.sleep(0.01)
            seen_before = len(hog_replies)
            await calc_answered(server.port)
            seen_at_answer = len(hog_replies)
            async with asyncio.timeout(60):
                await reader
        assert all(isinstance(reply, CalcResult) for reply in hog_replies)
        # B came after A's job that was running, and at most one more of A's.
        assert seen_at_answer - seen_before <= 2, (seen_before, seen_at_answer)
        assert seen_at_answer < 10


async def test_past_max_queued_jobs_a_calc_is_told_busy(tmp_path: Path) -> None:
    async with running(tmp_path, "--workers", "1", "--max-queued-jobs", "2") as server:
        sock, welcome = await asyncio.to_thread(greet, server.port)
        with sock:
            assert isinstance(welcome, Welcome)
            assert welcome.limits["max_queued_jobs"] == 2
            sock.sendall(b"".join(pack(Calc(id=n, ops=SLOW_OPS[:100])) for n in range(8)))
            conversation = ClientConnection()
            got: list[Reply] = []
            while len(got) < 8:
                data = await asyncio.to_thread(sock.recv, 1 << 20)
                conversation.receive_data(data)
                while (reply := conversation.next_event()) is not None:
                    got.append(reply)
            # One running and two waiting are answered; the rest are refused, each by id,
            # and the connection goes on.
            answered = sorted(r.id for r in got if isinstance(r, CalcResult))
            busy = sorted(r.ref for r in got if isinstance(r, Error) and r.code == "busy")
            assert answered == [0, 1, 2]
            assert busy == [3, 4, 5, 6, 7]
            sock.sendall(pack(Calc(id=9, ops=["1 + 1"])))
            reply = await asyncio.to_thread(read_reply, sock)
            assert isinstance(reply, CalcResult)
            assert reply.results == [2]
        counters = await stats(server.port)
        assert counters["jobs_refused"] == 5
        assert counters["jobs_queued"] == 0


async def test_partial_frames_are_bounded_server_wide(tmp_path: Path) -> None:
    """Past max_partial bytes of half-sent frames, a connection in the middle of a frame
    is read no further: what the server holds stays near the bound, not the sum of what
    was sent, and a normal client is still served; the frames time out and free it all."""
    args = ("--max-partial", str(MiB), "--frame-timeout", "2", "--hello-timeout", "2")
    async with running(tmp_path, *args) as server:
        socks = []
        try:
            for _ in range(12):
                sock = raw(server.port)
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.send(MiB.to_bytes(4, "big") + b"x" * (MiB - 100))
                socks.append(sock)
            await calc_answered(server.port)
            held = (await stats(server.port))["partial_bytes"]
            # 12 MiB were sent; each connection may have one read past the bound.
            assert MiB <= held < 6 * MiB, held
            await closed(server, 12, "connection_timed_out")
        finally:
            for sock in socks:
                sock.close()
        assert (await stats(server.port))["partial_bytes"] == 0
