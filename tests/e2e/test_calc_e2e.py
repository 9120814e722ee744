"""The compute path end to end: real server subprocess, real sockets, real CLI."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import struct
from pathlib import Path

import pytest
from fwtest import run_cli

from forkwire.client.calc.run import DEFAULT_BATCH
from forkwire.client.calc.tcp import connections_for
from forkwire.client.local import LocalServer
from forkwire.protocol import (
    Bye,
    Calc,
    CalcResult,
    Error,
    FrameDecoder,
    Hello,
    Stats,
    StatsResult,
    Welcome,
    decode_reply,
    encode_frame,
    pack,
)


def python_answer(line: str) -> str:
    """What the results file must say for a line Python itself can evaluate."""
    try:
        return repr(eval(line))  # the oracle, in tests only
    except ZeroDivisionError:
        return "error: division_by_zero: division by zero"


class RawClient:
    """A blocking socket speaking frames, for poking the server with bad input."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.decoder = FrameDecoder(max_frame=64 * 1024 * 1024)
        self.ready: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> object | None:
        while not self.ready:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.ready.extend(self.decoder.feed(data))
        return decode_reply(self.ready.pop(0))

    def close(self) -> None:
        self.sock.close()


async def in_thread(func, *args):  # type: ignore[no-untyped-def]
    """Blocking socket work off the event loop that the fixture's drain task runs on."""
    return await asyncio.to_thread(func, *args)


async def test_real_workload_slice_matches_python(
    server: LocalServer, real_operations: Path, tmp_path: Path
) -> None:
    """The first 20,000 real lines come back in order, exactly Python's values; hostile
    lines are error lines; afterwards the server answers and no job child is left."""
    with real_operations.open(encoding="utf-8") as handle:
        lines = list(itertools.islice(handle, 20_000))
    source = tmp_path / "ops.txt"
    source.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "results.txt"

    done = await in_thread(run_cli, "calc", str(source), "-o", str(out), "--port", str(server.port))

    assert done.returncode == 0, done.stderr
    assert "20000 lines" in done.stdout
    results = out.read_text(encoding="utf-8").splitlines()
    assert len(results) == 20_000
    hostile = 0
    for line, result in zip(lines, results, strict=True):
        if "import" in line:
            hostile += 1
            assert result.startswith("error: syntax:"), (line, result)
        else:
            assert result == python_answer(line), line
    assert hostile == 2  # lines 9,000 and 10,001 of the real file

    stats = await in_thread(_stats, server.port)
    assert stats.counters["children_alive"] == 0
    jobs = -(-20_000 // DEFAULT_BATCH)  # one job per batch of the CLI's default size
    assert stats.counters["jobs_finished"] == stats.counters["jobs_started"] == jobs


def _stats(port: int) -> StatsResult:
    client = RawClient(port)
    try:
        client.send_raw(pack(Stats()))
        reply = client.recv()
        assert isinstance(reply, StatsResult)
        return reply
    finally:
        client.close()


async def test_bad_frames_get_error_frames_and_connection_stays_usable(
    server: LocalServer,
) -> None:
    """Invalid JSON, unknown types and bad fields each get an error frame naming the
    problem; a valid job on the same connection is then answered."""

    def converse() -> list[object | None]:
        client = RawClient(server.port)
        replies: list[object | None] = []
        try:
            for payload in (
                b"not json",
                b"[1, 2]",
                b'{"type": "launch_missiles"}',
                b'{"type": "calc", "id": 7, "ops": [1]}',
            ):
                client.send_raw(encode_frame(payload))
                replies.append(client.recv())
            client.send_raw(pack(Calc(id=8, ops=["1 + 2 * 3", "7 - 2 - 1", "1 / 4"])))
            replies.append(client.recv())
        finally:
            client.close()
        return replies

    replies = await in_thread(converse)

    codes = [reply.code for reply in replies[:4] if isinstance(reply, Error)]
    assert codes == ["bad_json", "bad_json", "unknown_type", "bad_message"]
    assert isinstance(replies[3], Error)
    assert replies[3].ref == 7
    answer = replies[4]
    assert isinstance(answer, CalcResult)
    assert answer.id == 8
    assert answer.results == [7, 4, 0.25]
    assert answer.errors == []


async def test_oversized_frame_is_refused_and_connection_closed(server: LocalServer) -> None:
    """A header over max_frame gets frame_too_large and the server closes without reading
    the body; the server keeps serving other connections."""

    def converse() -> tuple[object | None, object | None]:
        client = RawClient(server.port)
        try:
            client.send_raw(struct.pack("!I", 50 * 1024 * 1024) + b"{")
            first = client.recv()
            second = client.recv()  # None: the server closed the connection
        finally:
            client.close()
        return first, second

    first, second = await in_thread(converse)

    assert isinstance(first, Error)
    assert first.code == "frame_too_large"
    assert second is None
    stats = await in_thread(_stats, server.port)
    assert stats.counters["frames_rejected"] >= 1


async def test_many_jobs_in_flight_on_one_connection_and_bye_comes_last(
    server: LocalServer,
) -> None:
    """Twenty jobs sent back to back are all answered by id; bye is answered after them."""

    def converse() -> list[object | None]:
        client = RawClient(server.port)
        try:
            client.send_raw(pack(Hello(client="test")))
            welcome = client.recv()
            assert isinstance(welcome, Welcome)
            client.send_raw(
                b"".join(pack(Calc(id=i, ops=[f"{i} * {i}", f"{i} / 0"])) for i in range(20))
                + pack(Bye())
            )
            return [client.recv() for _ in range(21)]
        finally:
            client.close()

    replies = await in_thread(converse)

    assert isinstance(replies[-1], Bye)
    by_id = {reply.id: reply for reply in replies[:-1] if isinstance(reply, CalcResult)}
    assert sorted(by_id) == list(range(20))
    for i, reply in by_id.items():
        assert reply.results == [i * i, None]
        assert [(e.index, e.code) for e in reply.errors] == [(1, "division_by_zero")]


async def test_line_too_long_for_a_frame_is_an_error_line(tmp_path: Path) -> None:
    """With a small max_frame, a line that cannot fit is an error line; the rest pass."""
    running = await LocalServer.start("--db", "memory://", "--max-frame", "2048")
    try:
        source = tmp_path / "ops.txt"
        source.write_text("1 + 1\n" + "1 + " * 1000 + "1\n2 * 3\n", encoding="utf-8")
        out = tmp_path / "out.txt"
        done = await in_thread(
            run_cli, "calc", str(source), "-o", str(out), "--port", str(running.port)
        )
    finally:
        await running.stop()
    assert done.returncode == 0, done.stderr
    results = out.read_text(encoding="utf-8").splitlines()
    assert results[0] == "2"
    assert results[2] == "6"
    assert results[1].startswith("error: too_long: line of 4004 bytes is over the")


async def test_7z_archive_is_accepted(server: LocalServer, tmp_path: Path) -> None:
    """operations.7z, as the assignment ships it, is read like the plain text."""
    py7zr = pytest.importorskip("py7zr")
    plain = tmp_path / "operations.txt"
    plain.write_text("1 + 2\n3 * 4\n10 / 4\n", encoding="utf-8")
    archive = tmp_path / "operations.7z"
    with py7zr.SevenZipFile(archive, "w") as handle:
        handle.write(plain, "operations.txt")
    out = tmp_path / "out.txt"
    done = await in_thread(
        run_cli, "calc", str(archive), "-o", str(out), "--port", str(server.port)
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").splitlines() == ["3", "12", "2.5"]


class CuttingProxy:
    """Forwards TCP connections to a server; cuts the first one once the client has sent
    ``cut_after`` bytes on it (mid-job), as a server dying behind a balancer would."""

    def __init__(self, upstream: int, cut_after: int) -> None:
        self.upstream = upstream
        self.cut_after = cut_after
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        doomed = self.connections == 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, cut: bool) -> None:
            sent = 0
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
                sent += len(data)
                if cut and sent > self.cut_after:
                    return

        try:
            await asyncio.wait(
                [
                    asyncio.create_task(pipe(reader, up_writer, doomed)),
                    asyncio.create_task(pipe(up_reader, writer, False)),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            writer.close()
            up_writer.close()


async def test_jobs_spread_over_connections_and_survive_losing_one(
    server: LocalServer, tmp_path: Path
) -> None:
    """--connections 3: the jobs go over three connections; one is cut mid-run, its jobs
    are sent again on the others (and a new connection), and the results are exact."""
    lines = [f"{i} * 3 - {i % 7} / 2" for i in range(3000)]
    source = tmp_path / "ops.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proxy = CuttingProxy(server.port, cut_after=2000)
    listener = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    out = tmp_path / "out.txt"
    try:
        done = await in_thread(
            run_cli, "calc", str(source), "-o", str(out), "--port", str(port),
            "--connections", "3", "--batch", "100",
        )  # fmt: skip
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert "connection lost" in done.stderr
    assert proxy.connections == 4  # three, and one in place of the one cut
    expected = [repr(eval(line, {"__builtins__": {}})) for line in lines]  # the reference
    assert out.read_text(encoding="utf-8").splitlines() == expected


async def test_by_default_calc_opens_the_connections_the_server_needs(tmp_path: Path) -> None:
    """The server runs at most connection_workers jobs of one connection at once (its
    welcome says so): calc opens workers / connection_workers connections to use every
    worker, and the results are exact."""
    lines = [f"{i} + {i} * 2" for i in range(500)]
    source = tmp_path / "ops.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    server = await LocalServer.start("--db", "memory://", "--workers", "2")
    proxy = CuttingProxy(server.port, cut_after=10**12)
    listener = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    out = tmp_path / "out.txt"
    try:
        done = await in_thread(
            run_cli, "calc", str(source), "-o", str(out), "--port", str(port), "--batch", "50"
        )
    finally:
        listener.close()
        await server.stop()
    assert done.returncode == 0, done.stderr
    assert proxy.connections == connections_for({"workers": 2, "connection_workers": 1}) == 2
    assert out.read_text(encoding="utf-8").splitlines() == [str(i * 3) for i in range(500)]


async def test_standard_input_and_a_pipe_are_read_once(server: LocalServer, tmp_path: Path) -> None:
    """``calc -`` reads stdin, and a FIFO (what ``<(cmd)`` gives) is read once, not twice:
    every line is answered."""
    lines = "1 + 2\n3 * 4\n10 / 4\n"
    out = tmp_path / "stdin.txt"
    done = await in_thread(
        lambda: run_cli("calc", "-", "-o", str(out), "--port", str(server.port), input=lines)
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").splitlines() == ["3", "12", "2.5"]

    fifo = tmp_path / "ops.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "fifo.txt"
    call = in_thread(run_cli, "calc", str(fifo), "-o", str(out), "--port", str(server.port))
    writer = in_thread(fifo.write_bytes, lines.encode())
    done, _ = await asyncio.gather(call, writer)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8").splitlines() == ["3", "12", "2.5"]


async def test_lines_split_at_newline_only(server: LocalServer, tmp_path: Path) -> None:
    """Results line up with the input as ``wc -l`` counts it: a CRLF ending is one line
    end, and a stray \\r, \\x0b, \\x1c or \\u2028 inside a line does not split it."""
    source = tmp_path / "ops.txt"
    source.write_bytes("1 + 1\r\n2 +\r 3\n4 *\x0b 4\n5\x1c\n6\u20287\n8 - 1\n".encode())
    out = tmp_path / "out.txt"
    done = await in_thread(run_cli, "calc", str(source), "-o", str(out), "--port", str(server.port))
    assert done.returncode == 0, done.stderr
    results = out.read_text(encoding="utf-8").split("\n")
    assert results[-1] == ""
    assert len(results) - 1 == source.read_bytes().count(b"\n") == 6
    assert results[0] == "2"
    # Each of these is one line that Python would not evaluate either: one error line.
    assert all(line.startswith("error: syntax: ") for line in results[1:5]), results
    assert results[5] == "7"


async def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    """An input file that cannot be read is a clear error with exit status 2."""
    done = await in_thread(run_cli, "calc", str(tmp_path / "nope.txt"), "--port", "9")
    assert done.returncode == 2
    assert "cannot read" in done.stderr


async def test_sigterm_lets_running_jobs_finish_and_exits_0(tmp_path: Path) -> None:
    """On SIGTERM the server answers the job in flight, then exits 0 with no child left."""
    running = await LocalServer.start("--db", "memory://", "--grace", "20")
    lines = ["1 + 1"] * 100_000

    def converse() -> object | None:
        client = RawClient(running.port)
        try:
            # Stats is answered only after the frame before it was read: the job is accepted.
            client.send_raw(pack(Calc(id=1, ops=lines)) + pack(Stats()))
            assert isinstance(client.recv(), StatsResult)
            os.kill(running.proc.pid, signal.SIGTERM)
            return client.recv()
        finally:
            client.close()

    try:
        reply = await in_thread(converse)
    except BaseException:
        await running.stop(signal.SIGKILL)
        raise
    code = await running.stop(signum=None)
    assert isinstance(reply, CalcResult)
    assert reply.results == [2] * len(lines)
    assert code == 0
    stopped = running.named("server_stopped")
    assert stopped
    assert stopped[0]["children_alive"] == 0
