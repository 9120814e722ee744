"""--daemon: the command returns 0 only once the server listens (non-zero with the reason
otherwise), the pidfile names the daemon, SIGHUP reopens the log file, and
``kill $(cat pidfile)`` stops it cleanly and removes the pidfile."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from fwtest import free_port

from forkwire.server.daemon import pidfile

#: Seconds any one wait of these tests may take.
WAIT = 20.0


def start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forkwire.server", "--daemon", "--no-udp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie whose parent (not us) has yet to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def stopper() -> Iterator[list[int]]:
    """Daemons to kill if a test leaves one running."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_daemon_starts_listening_reopens_its_log_and_stops_on_sigterm(
    tmp_path: Path, stopper: list[int]
) -> None:
    port = free_port()
    result = start(
        tmp_path,
        *("--port", str(port), "--pidfile", "forkwire.pid", "--log-file", "forkwire.log"),
        *("--db", "sqlite:///store.sqlite"),
    )
    assert result.returncode == 0, result.stderr
    pidfile, log = tmp_path / "forkwire.pid", tmp_path / "forkwire.log"
    pid = int(pidfile.read_text())
    stopper.append(pid)
    assert f"pid {pid}" in result.stderr
    assert pid != os.getpid()
    assert not gone(pid)
    # Ready means listening: a connection is accepted at once, no retry loop.
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert '"event": "server_started"' in log.read_text()
    assert (tmp_path / "store.sqlite").exists()  # relative paths: the starting directory

    log.rename(tmp_path / "forkwire.log.1")  # what logrotate does
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: log.exists() and "log_reopened" in log.read_text(), "the new log file")

    os.kill(pid, signal.SIGTERM)  # kill $(cat forkwire.pid)
    wait_for(lambda: gone(pid), "the daemon to exit")
    assert not pidfile.exists()
    assert '"event": "shutdown_complete"' in log.read_text()


def test_a_taken_port_fails_the_start_with_the_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start(
            tmp_path,
            *("--port", str(port), "--pidfile", "forkwire.pid", "--log-file", "forkwire.log"),
            *("--db", "memory://"),
        )
    assert result.returncode == 1
    assert "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "forkwire.pid").exists()
    assert "address already in use" in (tmp_path / "forkwire.log").read_text()


def test_a_live_pidfile_refuses_a_second_daemon(tmp_path: Path) -> None:
    (tmp_path / "forkwire.pid").write_text(f"{os.getpid()}\n")  # alive: this test
    result = start(
        tmp_path, *("--port", str(free_port()), "--pidfile", "forkwire.pid", "--db", "memory://")
    )
    assert result.returncode == 1
    assert f"names pid {os.getpid()}, which is running" in result.stderr
    assert (tmp_path / "forkwire.pid").read_text() == f"{os.getpid()}\n"


def test_a_stale_pidfile_is_replaced_and_removed_at_exit(tmp_path: Path) -> None:
    """A pidfile left by a crash (its pid no longer runs) does not block a start."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "forkwire.pid"
    path.write_text(f"{dead.pid}\n")
    with pidfile(str(path)):
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def test_sighup_does_not_kill_a_daemon_without_a_log_file(
    tmp_path: Path, stopper: list[int]
) -> None:
    port = free_port()
    result = start(tmp_path, "--port", str(port), "--pidfile", "forkwire.pid", "--db", "memory://")
    assert result.returncode == 0, result.stderr
    pid = int((tmp_path / "forkwire.pid").read_text())
    stopper.append(pid)
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.3)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not gone(pid)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: gone(pid), "the daemon to exit")
    assert not (tmp_path / "forkwire.pid").exists()
