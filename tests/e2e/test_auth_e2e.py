"""Issue 12 end to end: a server with a token serves no request of any kind without it,
over TCP or UDP; TLS with a certificate made here (trustme); every client command over
TLS with the token; and one line, exit 1, for a wrong token or a missing --tls."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from fwtest import run_cli

from forkwire.client.connection import Connection, Credentials
from forkwire.client.local import LocalServer
from forkwire.client.udp import UdpConnection
from forkwire.protocol import (
    Ack,
    Calc,
    CalcResult,
    Error,
    ErrorCode,
    Hello,
    Ping,
    Pong,
    Reading,
    ReadingMsg,
    ReadingsMsg,
    Reply,
    Report,
    ReportResult,
    Request,
    Series,
    SeriesResult,
    Stats,
    StatsResult,
    decode_reply,
    pack,
)

TOKEN = "e2e-token-7f3a9c"


@dataclass
class Secured:
    """A server with a token and TLS, and what a client needs to reach it."""

    server: LocalServer
    ca: Path
    credentials: Credentials


@pytest.fixture
async def token_server(tmp_path: Path) -> AsyncIterator[LocalServer]:
    """A plain-TCP server whose token is read from a file."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = await LocalServer.start(
        "--db", f"sqlite:///{tmp_path / 'store.sqlite'}", "--token-file", str(token_file)
    )
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    """A TLS server (certificate for 127.0.0.1 from a CA made here) with --token."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = await LocalServer.start(
        "--db",
        f"sqlite:///{tmp_path / 'store.sqlite'}",
        "--tls-cert",
        str(tmp_path / "server.pem"),
        "--token",
        TOKEN,
    )
    try:
        yield Secured(server, tmp_path / "ca.pem", Credentials(TOKEN, True, tmp_path / "ca.pem"))
    finally:
        await server.stop()
        # The token never reaches the log: not on start, not with a refused client.
        assert TOKEN not in json.dumps(list(server.events))


READING = Reading(sensor="auth", seq=0, ts=1.0, value=1.5)
#: Every request type, and the reply a client with the token gets (TCP).
REQUESTS: dict[str, tuple[Request, type[Reply]]] = {
    "calc": (Calc(id=1, ops=["1 + 1"]), CalcResult),
    "reading": (ReadingMsg(sensor="auth", seq=0, ts=1.0, value=1.5), Ack),
    "readings": (ReadingsMsg(items=[READING]), Ack),
    "stats": (Stats(), StatsResult),
    "report": (Report(), ReportResult),
    "series": (Series(sensor="auth"), SeriesResult),
    "ping": (Ping(id=3), Pong),
}


async def _raw_exchange(port: int, data: bytes) -> list[Reply]:
    """Send bytes on a fresh connection; every frame the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            received = await reader.read()  # to EOF: the server must close
    finally:
        writer.close()
    replies = []
    while received:
        size = int.from_bytes(received[:4], "big")
        replies.append(decode_reply(received[4 : 4 + size]))
        received = received[4 + size :]
    return replies


def _unauthorized(replies: list[Reply]) -> None:
    assert len(replies) == 1, replies
    (reply,) = replies
    assert isinstance(reply, Error)
    assert reply.code == ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_tcp_request_is_refused_without_the_token_and_served_with_it(
    token_server: LocalServer, name: str
) -> None:
    request, answer = REQUESTS[name]
    port = token_server.port
    # No hello, a hello without a token, a hello with a wrong one: refused and closed.
    _unauthorized(await _raw_exchange(port, pack(request)))
    _unauthorized(await _raw_exchange(port, pack(Hello()) + pack(request)))
    _unauthorized(await _raw_exchange(port, pack(Hello(token="wrong")) + pack(request)))
    async with await Connection.open(
        "127.0.0.1", port, credentials=Credentials(token=TOKEN)
    ) as connection:
        if name == "series":  # a sensor to page through
            assert isinstance(await connection.request(ReadingsMsg(items=[READING])), Ack)
        reply = await connection.request(request)
        assert isinstance(reply, answer), reply
    assert TOKEN not in json.dumps(list(token_server.events))


#: Over UDP: what a sealed request is answered (report and series are TCP-only: refused
#: as such, which shows they were read).
UDP_ANSWERS: dict[str, type[Reply]] = {
    **{name: answer for name, (_, answer) in REQUESTS.items()},
    "report": Error,
    "series": Error,
}


async def _counters(port: int) -> dict[str, int | float]:
    async with await Connection.open(
        "127.0.0.1", port, credentials=Credentials(token=TOKEN)
    ) as connection:
        reply = await connection.request(Stats())
    assert isinstance(reply, StatsResult)
    return reply.counters


async def _udp_reply(udp: UdpConnection, request: Request, wait: float) -> Reply | None:
    udp.send(request)
    try:
        async with asyncio.timeout(wait):
            return await udp.recv()
    except TimeoutError:
        return None


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_udp_request_is_dropped_without_the_token_and_served_with_it(
    token_server: LocalServer, name: str
) -> None:
    request, _ = REQUESTS[name]
    port = token_server.udp_port
    before = await _counters(token_server.port)
    plain = await UdpConnection.open("127.0.0.1", port)
    forged = await UdpConnection.open("127.0.0.1", port, token="wrong")
    try:
        assert await _udp_reply(plain, request, 0.5) is None
        assert await _udp_reply(forged, request, 0.5) is None
    finally:
        plain.close()
        forged.close()
    after = await _counters(token_server.port)
    assert (
        after.get("udp_datagrams_unauthenticated", 0)
        - before.get("udp_datagrams_unauthenticated", 0)
        == 2
    )
    # Nothing was stored or run by them.
    for counter in ("readings_received", "jobs_started"):
        assert after.get(counter, 0) == before.get(counter, 0)
    sealed = await UdpConnection.open("127.0.0.1", port, token=TOKEN)
    try:
        reply = await _udp_reply(sealed, request, 5.0)
    finally:
        sealed.close()
    assert isinstance(reply, UDP_ANSWERS[name]), reply
    if isinstance(reply, Error):
        assert reply.code == ErrorCode.BAD_MESSAGE
        assert "TCP only" in reply.message


async def test_udp_hello_needs_the_token_too(token_server: LocalServer) -> None:
    plain = await UdpConnection.open("127.0.0.1", token_server.udp_port)
    try:
        assert await _udp_reply(plain, Hello(token=TOKEN), 0.5) is None  # carried, not proven
    finally:
        plain.close()
    sealed = await UdpConnection.open("127.0.0.1", token_server.udp_port, token=TOKEN)
    try:
        welcome = await sealed.hello(wait=2.0)
    finally:
        sealed.close()
    assert "token" not in json.dumps(welcome.model_dump())


async def test_tls_with_the_token_serves_and_logs_a_plain_client(secured: Secured) -> None:
    port = secured.server.port
    async with await Connection.open(
        "127.0.0.1", port, credentials=secured.credentials
    ) as connection:
        assert isinstance(await connection.request(Stats()), StatsResult)
    # A client in the clear: told at once, not left hanging; the server logs it.
    started = time.monotonic()
    with pytest.raises(Exception, match="the server speaks TLS: use --tls"):
        await Connection.open("127.0.0.1", port, credentials=Credentials(token=TOKEN))
    assert time.monotonic() - started < 4.0
    for _ in range(50):
        if secured.server.named("tls_handshake_failed"):
            break
        await asyncio.sleep(0.05)
    (failure,) = secured.server.named("tls_handshake_failed")
    assert failure["reason"] == "WRONG_VERSION_NUMBER"
    assert failure["level"] == "warning"


# --- the CLI ----------------------------------------------------------------------------


def _tls_args(secured: Secured) -> list[str]:
    return ["--port", str(secured.server.port), "--tls", "--cafile", str(secured.ca)]


ENV = {"FORKWIRE_TOKEN": TOKEN}


async def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # In a thread: the server's log is read on this loop, which must keep running.
    return await asyncio.to_thread(run_cli, *args, timeout=60, env=env)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


async def test_cli_without_tls_against_a_tls_server_says_so(
    secured: Secured, tmp_path: Path
) -> None:
    ops = tmp_path / "ops.txt"
    ops.write_text("1 + 1\n")
    out = str(tmp_path / "out.txt")
    done = await _cli("calc", str(ops), "-o", out, "--port", str(secured.server.port), env=ENV)
    assert done.returncode == 1
    assert "the server speaks TLS: use --tls" in _one_line(done.stderr)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"FORKWIRE_TOKEN": "not-it"}, "refused the token"),
        ({"FORKWIRE_TOKEN": ""}, "requires a token: give it with --token or FORKWIRE_TOKEN"),
    ],
)
async def test_cli_with_a_wrong_or_no_token_says_which(
    secured: Secured, tmp_path: Path, env: dict[str, str], said: str
) -> None:
    ops = tmp_path / "ops.txt"
    ops.write_text("1 + 1\n")
    out = str(tmp_path / "out.txt")
    done = await _cli("calc", str(ops), "-o", out, *_tls_args(secured), env=env)
    assert done.returncode == 1
    assert said in _one_line(done.stderr)
    assert "not-it" not in done.stderr


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_calc_over_tls_with_the_token(
    secured: Secured, tmp_path: Path, transport: str
) -> None:
    ops = tmp_path / "ops.txt"
    ops.write_text("1 + 1\n7 - 2 - 1\n1 / 4\n")
    out = tmp_path / "out.txt"
    done = await _cli(
        "calc", str(ops), "-o", str(out), "--transport", transport, *_tls_args(secured), env=ENV
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text().split() == ["2", "4", "0.25"]


async def test_sensors_over_tls_with_the_token(secured: Secured, tmp_path: Path) -> None:
    done = await _cli(
        "sensors", "--count", "2", "--period", "0.1", "--duration", "1", "--no-live", "--json",
        "--outbox", str(tmp_path / "outbox.sqlite"), *_tls_args(secured), env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["acked"] > 0, summary


async def test_replay_over_tls_with_the_token(secured: Secured, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b\n1,2\n3,4\n5,6\n")
    done = await _cli(
        "replay", str(rows), "--interval", "0", "--out", str(tmp_path / "sent.txt"),
        "--outbox", str(tmp_path / "outbox.sqlite"), *_tls_args(secured), env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 acked" in done.stdout, done.stdout


async def test_profiles_over_tls_with_the_token(secured: Secured, tmp_path: Path) -> None:
    done = await _cli(
        "profiles", "5", "--interval", "0", "--ages", "0-200", "--seed", "1",
        "--spool", str(tmp_path / "spool.jsonl"), *_tls_args(secured), env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sent 5," in done.stdout, done.stdout


async def test_report_over_tls_with_the_token(secured: Secured, tmp_path: Path) -> None:
    async with await Connection.open(
        "127.0.0.1", secured.server.port, credentials=secured.credentials
    ) as connection:
        assert isinstance(await connection.request(ReadingsMsg(items=[READING])), Ack)
    out = tmp_path / "report"
    done = await _cli("report", "--out", str(out), *_tls_args(secured), env=ENV)
    assert done.returncode == 0, done.stderr
    assert "auth" in json.loads((out / "report.json").read_text())["sensors"]


async def test_stats_and_ping_over_tls_with_the_token(secured: Secured) -> None:
    done = await _cli("stats", "--json", *_tls_args(secured), env=ENV)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["connections_total"] >= 1
    done = await _cli("ping", "--count", "2", "--interval", "0", *_tls_args(secured), env=ENV)
    assert done.returncode == 0, done.stderr
    done = await _cli("stats", *_tls_args(secured), env={"FORKWIRE_TOKEN": "nope"})
    assert done.returncode == 1
    assert "refused the token" in _one_line(done.stderr)


async def test_sensors_with_a_wrong_token_stop_at_once(secured: Secured, tmp_path: Path) -> None:
    """No retrying what cannot work: one line, exit 1, the readings kept in the outbox."""
    done = await _cli(
        "sensors", "--count", "1", "--period", "0.1", "--duration", "30", "--no-live",
        "--outbox", str(tmp_path / "outbox.sqlite"), *_tls_args(secured),
        env={"FORKWIRE_TOKEN": "nope"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "refused the token" in done.stderr.strip().splitlines()[-1]


async def test_demo_over_tls_with_the_token(secured: Secured, tmp_path: Path) -> None:
    done = await _cli(
        "demo", "--host", "127.0.0.1", "--rates", "1000", "--count", "100", "--noise", "none",
        "--token", TOKEN, "-o", str(tmp_path), *_tls_args(secured),
        env={"PATH": str(tmp_path)},  # no iperf3 reference run: it is not what is tested
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads((tmp_path / "demo.json").read_text())["runs"]
    assert {run["transport"] for run in runs} == {"tcp", "udp"}


async def test_a_clients_token_is_not_given_to_a_server_it_starts(tmp_path: Path) -> None:
    """report --db starts a server of its own: FORKWIRE_TOKEN (meant for the server the
    clients talk to) must not lock the command out of it."""
    store = tmp_path / "store.sqlite"
    sqlite3.connect(store).close()
    done = await _cli("report", "--db", f"sqlite:///{store}", "--out", str(tmp_path / "r"), env=ENV)
    assert done.returncode == 0, done.stderr
