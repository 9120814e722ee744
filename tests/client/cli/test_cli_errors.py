"""Every client error through the real CLI: one line on stderr, the class's exit status.

Each scenario provokes its error for real: a missing file, a port nobody listens on, a
store URL the server refuses, or a server of the test's own that welcomes the client and
then closes, refuses or says nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from fwtest import REPO, free_port, run_cli, run_code

import forkwire.client
from forkwire.client.calc.run import CalcFailed
from forkwire.client.cli.profiles import ProfilesFailed
from forkwire.client.connection import BadFrame, Connection
from forkwire.client.demo import DemoError
from forkwire.client.errors import (
    AccessDenied,
    ClientError,
    ConnectError,
    ConnectionLost,
    InputError,
    Interrupted,
    MissingExtra,
    UsageError,
)
from forkwire.client.local import ServerFailed
from forkwire.client.report import ReportFailed
from forkwire.protocol import (
    DEFAULT_MAX_FRAME,
    Error,
    ErrorCode,
    FrameDecoder,
    Hello,
    Welcome,
    decode_datagram,
    decode_request,
    pack,
)

#: Every wait here is bounded by this.
WAIT = 60.0
WELCOME = pack(Welcome(server="one-trick", max_frame=DEFAULT_MAX_FRAME))

Trick = Literal["close", "refuse", "ignore"]


class _UdpWelcome(asyncio.DatagramProtocol):
    """Answers a hello datagram with a welcome, and nothing else."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if isinstance(decode_request(decode_datagram(data)), Hello):
            self.transport.sendto(WELCOME, addr)


class OneTrickServer:
    """Welcomes every hello, over TCP and UDP, then meets any other request with one trick:
    ``close`` the connection, ``refuse`` it with an error frame, or ``ignore`` it."""

    def __init__(self, trick: Trick) -> None:
        self.trick = trick
        #: Set when a request other than hello came in.
        self.asked = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection."""
        decoder = FrameDecoder(max_frame=DEFAULT_MAX_FRAME)
        try:
            while data := await reader.read(64 * 1024):
                for payload in decoder.feed(data):
                    if isinstance(decode_request(payload), Hello):
                        writer.write(WELCOME)
                        continue
                    self.asked.set()
                    if self.trick == "close":
                        return
                    if self.trick == "refuse":
                        error = Error(code=ErrorCode.INTERNAL_ERROR, message="scripted refusal")
                        writer.write(pack(error))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@asynccontextmanager
async def one_trick(trick: Trick) -> AsyncIterator[tuple[OneTrickServer, int]]:
    """A :class:`OneTrickServer` on a free port of 127.0.0.1 (TCP and UDP), and the port."""
    server = OneTrickServer(trick)
    tcp = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpWelcome, local_addr=("127.0.0.1", port)
    )
    try:
        yield server, port
    finally:
        udp.close()
        tcp.close()


def ops_file(tmp_path: Path) -> Path:
    """A two-line expressions file."""
    path = tmp_path / "ops.txt"
    path.write_text("1 + 1\n2 * 3\n", encoding="utf-8")
    return path


def assert_one_line(done: Any, status: int, line: str) -> None:
    """The command exited with ``status`` and said ``line`` (a prefix of it) and no more."""
    assert done.returncode == status, done.stderr
    assert done.stderr.startswith(f"forkwire: {line}"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


async def cli(*args: str) -> Any:
    """``run_cli`` off the event loop, so a server of the test's own keeps serving."""
    return await asyncio.to_thread(run_cli, *args)


async def test_usage_error_is_status_2() -> None:
    """UsageError: options that contradict each other, before anything runs."""
    done = await cli("demo", "--host", "127.0.0.1")
    assert_one_line(done, 2, "a host needs a port")


async def test_input_error_is_status_2(tmp_path: Path) -> None:
    """InputError: an output file that cannot be written (gen-ops into a missing folder)."""
    done = await cli("gen-ops", "--lines", "3", "-o", str(tmp_path / "missing" / "ops.txt"))
    assert_one_line(done, 2, f"cannot write {tmp_path / 'missing' / 'ops.txt'}")


async def test_report_never_creates_a_store(tmp_path: Path) -> None:
    """report --db on a store file that is not there: one line, exit 2, and no folder or
    empty database left behind (the server would create one on start)."""
    missing = tmp_path / "missing" / "dir" / "x.sqlite"
    done = await cli("report", "--db", f"sqlite:///{missing}", "-o", str(tmp_path / "r"))
    assert_one_line(done, 2, f"no store at {missing}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["sensors", "--outbox", "{tmp}/no/such/dir/o.sqlite", "--duration", "1"],
            "cannot open the outbox",
        ),
        (["demo", "--quick", "-o", "{tmp}/afile/sub"], "cannot create the output folder"),
        (
            ["report", "--db", "sqlite:///{tmp}/afile", "-o", "{tmp}/afile/sub"],
            "cannot create the report folder",
        ),
        (["calc", "{tmp}/afile", "-o", "{tmp}/afile/sub/r.txt"], "cannot write"),
    ],
)
async def test_a_bad_output_path_is_one_line_not_a_traceback(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """An output file or folder that cannot be made: one line naming it, exit 2."""
    (tmp_path / "afile").write_text("")  # a file where a folder is wanted
    done = await cli(*(arg.format(tmp=tmp_path) for arg in args))
    assert_one_line(done, 2, line)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        ("calc", " (is forkwire-server running?)"),
        ("report", " (or pass --db to read the store directly)"),
        ("demo", ""),
    ],
)
async def test_connect_error_is_status_1_with_the_commands_hint(
    tmp_path: Path, command: str, hint: str
) -> None:
    """ConnectError: nobody listens; the command adds what to check, if it has a hint."""
    port = str(free_port())
    args = {
        "calc": ["calc", str(ops_file(tmp_path)), "-o", str(tmp_path / "r.txt"), "--port", port],
        "report": ["report", "--port", port, "--out", str(tmp_path / "report")],
        "demo": ["demo", "--host", "127.0.0.1", "--port", port, "--out", str(tmp_path)],
    }[command]
    done = await cli(*args)
    assert_one_line(done, 1, f"cannot connect to 127.0.0.1:{port}: ")
    assert done.stderr.endswith(f"{hint}\n")


async def test_a_peer_that_is_not_a_forkwire_server_is_named_so(tmp_path: Path) -> None:
    """An HTTP server on the port: 'not a forkwire server', showing what it sent, at once
    (not an empty reason after a timeout); one line, exit 1."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        done = await cli("calc", str(ops_file(tmp_path)), "--port", str(port))
    finally:
        server.close()
    assert_one_line(
        done, 1, f"127.0.0.1:{port} is not a forkwire server: it answered with b'HTTP/1.1 400"
    )


async def test_a_silent_peer_is_not_a_forkwire_server_after_the_hello_timeout() -> None:
    """A peer that accepts and says nothing (waiting for a request line of its own)."""
    silent: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectError) as caught:
            await Connection.open("127.0.0.1", port, hello_timeout=0.3)
    finally:
        for writer in silent:
            writer.close()
        server.close()
    assert str(caught.value) == (
        f"127.0.0.1:{port} is not a forkwire server: no answer to hello within 0.3 s"
    )


async def test_connection_lost_is_status_1(tmp_path: Path) -> None:
    """ConnectionLost: the server closes the connection instead of answering the report."""
    async with one_trick("close") as (_, port):
        done = await cli("report", "--port", str(port), "--out", str(tmp_path / "report"))
    assert_one_line(done, 1, "the server closed the connection")


async def test_calc_failed_is_status_1(tmp_path: Path) -> None:
    """CalcFailed: the server goes away with the job unanswered, every time the job is
    sent again (on a new connection, each loss logged); said as 'calc failed'."""
    async with one_trick("close") as (_, port):
        done = await cli(
            "calc", str(ops_file(tmp_path)), "-o", str(tmp_path / "r.txt"), "--port", str(port)
        )
    assert done.returncode == 1, done.stderr
    *logged, last = done.stderr.splitlines()
    assert last.startswith("forkwire: calc failed: job 0 was sent 6 times"), done.stderr
    assert len(logged) == 6
    assert all("connection lost" in line for line in logged)


async def test_report_failed_is_status_1(tmp_path: Path) -> None:
    """ReportFailed: the server answers the report request with an error frame."""
    async with one_trick("refuse") as (_, port):
        done = await cli("report", "--port", str(port), "--out", str(tmp_path / "report"))
    assert_one_line(done, 1, "the server answered internal_error: scripted refusal")


async def test_demo_error_is_status_1(tmp_path: Path) -> None:
    """DemoError: the measured server refuses the demo's stats request."""
    async with one_trick("refuse") as (_, port):
        done = await cli("demo", "--host", "127.0.0.1", "--port", str(port), "--out", str(tmp_path))
    assert_one_line(done, 1, "demo failed: stats answered with 'error'")


async def test_server_failed_is_status_1(tmp_path: Path) -> None:
    """ServerFailed: report --db starts a server of its own, which refuses the URL."""
    done = await cli("report", "--db", "sqlite://", "--out", str(tmp_path / "report"))
    assert_one_line(done, 1, "the local server did not start; it said: ")
    assert "sqlite URL needs a file path" in done.stderr


async def test_profiles_failed_is_status_1_after_the_summary(tmp_path: Path) -> None:
    """ProfilesFailed: the processor dies (the seq counter cannot be saved: a folder is in
    the way of its temporary file); the summary is printed, then the failed process is
    named."""
    spool = tmp_path / "spool.jsonl"
    (tmp_path / "spool.jsonl.seq.tmp").mkdir()
    done = await cli(
        "profiles",
        "1",
        "--interval",
        "0",
        "--ages",
        "0-200",
        "--spool",
        str(spool),
        "--drain-timeout",
        "1",
        "--port",
        str(free_port()),
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("generated ")
    last = done.stderr.splitlines()[-1]
    assert last.startswith("forkwire: ")
    # The generator may be killed too, when it outlives the processor.
    assert "processor exited with 1" in last.removeprefix("forkwire: ").split("; ")


async def test_profiles_in_a_missing_folder_is_status_2(tmp_path: Path) -> None:
    """A spool in a folder that does not exist is refused before any process starts."""
    spool = tmp_path / "missing" / "spool.jsonl"
    done = await cli("profiles", "1", "--spool", str(spool), "--port", str(free_port()))
    assert_one_line(done, 2, f"cannot write the producer id {spool}.producer: ")


async def test_gen_ops_writes_stdout_and_never_overwrites_by_surprise(tmp_path: Path) -> None:
    """gen-ops prints to stdout by default; -o FILE refuses an existing file (exit 2, one
    line) unless --force, so the tracked operations.txt is never replaced by accident."""
    done = await cli("gen-ops", "--lines", "3", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    target = tmp_path / "ops.txt"
    target.write_text("mine\n")
    done = await cli("gen-ops", "--lines", "3", "-o", str(target))
    assert_one_line(done, 2, f"{target} exists; use --force to overwrite it")
    assert target.read_text() == "mine\n"
    done = await cli("gen-ops", "--lines", "3", "--seed", "1", "-o", str(target), "--force")
    assert done.returncode == 0, done.stderr
    assert (
        target.read_text().splitlines()
        == (await cli("gen-ops", "--lines", "3", "--seed", "1")).stdout.splitlines()
    )


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
async def test_a_port_out_of_range_is_a_usage_error(port: str) -> None:
    """--port is checked on the client too (1-65535): exit 2, naming the option."""
    done = await cli("calc", "operations.txt", "--port", port)
    assert done.returncode == 2, done.stderr
    assert "--port" in done.stderr


@pytest.mark.parametrize(
    ("signum", "status", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
)
async def test_ctrl_c_and_sigterm_say_what_the_results_file_holds(
    tmp_path: Path, signum: signal.Signals, status: int, word: str
) -> None:
    """Ctrl-C (130) or SIGTERM (143) while calc waits for answers: the command's own line,
    naming the incomplete results file and how many lines it holds; no traceback."""
    results = tmp_path / "r.txt"
    async with one_trick("ignore") as (server, port):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "tests" / "foreground.py"),
            "calc",
            str(ops_file(tmp_path)),
            "-o",
            str(results),
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        try:
            await asyncio.wait_for(server.asked.wait(), WAIT)
            proc.send_signal(signum)
            _, err = await asyncio.wait_for(proc.communicate(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == status
    assert err.decode() == (
        f"forkwire: {word}; {results} is incomplete: it holds the results of the first 0 lines\n"
    )
    assert results.read_text() == ""


def test_anything_else_is_a_bug_and_keeps_its_traceback(tmp_path: Path) -> None:
    """An exception that is not a ClientError is not dressed up as one line."""
    code = (
        "import sys\n"
        "import forkwire.client.calc.run as run\n"
        "async def broken(*args, **kwargs):\n"
        "    raise RuntimeError('a bug in calc')\n"
        "run.calc_file = broken\n"
        "from forkwire.client.cli.main import main\n"
        "sys.argv = ['forkwire', *sys.argv[1:]]\n"
        "main()\n"
    )
    done = run_code(code, "calc", str(ops_file(tmp_path)), "-o", str(tmp_path / "r"))
    assert done.returncode == 1
    assert "RuntimeError: a bug in calc" in done.stderr
    assert "Traceback" in done.stderr
    assert "forkwire: " not in done.stderr


#: Each error class and the test above that provokes it through the CLI.
PROVOKED: dict[type[ClientError], str] = {
    UsageError: "test_usage_error_is_status_2",
    InputError: "test_input_error_is_status_2",
    ConnectError: "test_connect_error_is_status_1_with_the_commands_hint",
    ConnectionLost: "test_connection_lost_is_status_1",
    BadFrame: "test_a_peer_that_is_not_a_forkwire_server_is_named_so",
    CalcFailed: "test_calc_failed_is_status_1",
    ReportFailed: "test_report_failed_is_status_1",
    DemoError: "test_demo_error_is_status_1",
    ServerFailed: "test_server_failed_is_status_1",
    ProfilesFailed: "test_profiles_failed_is_status_1_after_the_summary",
    Interrupted: "test_ctrl_c_and_sigterm_say_what_the_results_file_holds",
    MissingExtra: "tests/client/test_extras.py",
    AccessDenied: "tests/e2e/test_auth_e2e.py",
}


def test_every_client_error_is_provoked_somewhere() -> None:
    """A new ClientError class fails this test until a scenario above provokes it."""
    for module in pkgutil.walk_packages(forkwire.client.__path__, "forkwire.client."):
        importlib.import_module(module.name)
    found: set[type[ClientError]] = set()
    todo = [ClientError]
    while todo:
        for subclass in todo.pop().__subclasses__():
            found.add(subclass)
            todo.append(subclass)
    assert found == set(PROVOKED)
    assert {cls.exit_status for cls in found} == {1, 2, 130}
