"""On a terminal a command shows its final table once: the CLI run in a pseudo-terminal.

A live display (rich's Live) redraws in place and leaves its last frame on the screen when
it stops; what the screen finally holds is that last frame plus what was printed after it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from fwtest import REPO

from forkwire.client.demo.table import TITLE
from forkwire.client.local import LocalServer

#: rich's Live moves the cursor up and erases a line for each line of the previous frame.
_ERASE = re.compile(r"\x1b\[2K|\x1b\[1A")


def run_in_terminal(*args: str, columns: int = 80, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m forkwire ARGS`` with stdin, stdout and stderr on one pseudo-terminal
    ``columns`` wide; its exit status and all it wrote, escape sequences included."""
    main, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "forkwire", *args],
        stdin=child_side,
        stdout=child_side,
        stderr=child_side,
        cwd=REPO,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(child_side)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # every writer closed the terminal: EIO
                break
            if not data:
                break
            output += data
    finally:
        if process.poll() is None and time.monotonic() >= deadline:
            process.kill()
        status = process.wait(timeout=30)
        os.close(main)
    return status, output.decode(errors="replace")


def final_screen(output: str) -> str:
    """What stays on the screen below the last redraw of a live display."""
    ends = [match.end() for match in _ERASE.finditer(output)]
    return output[ends[-1] :] if ends else output


def test_demo_prints_its_table_once_on_a_terminal(tmp_path: Path) -> None:
    """forkwire demo on an 80-column terminal: one table, no line wider than the terminal."""
    status, output = run_in_terminal(
        "demo", "--rates", "500", "--count", "200", "--noise", "none", "-o", str(tmp_path)
    )

    assert status == 0, output
    assert output.count(TITLE) == 1
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert max(len(line) for line in plain.replace("\r", "").splitlines()) <= 80


async def test_sensors_live_table_is_left_once_on_a_terminal(
    server: LocalServer, tmp_path: Path
) -> None:
    """forkwire sensors on a terminal: the live table's last frame is the summary, and the
    summary is not printed a second time below it."""
    status, output = run_in_terminal(
        "sensors", "--port", str(server.port), "--count", "2", "--period", "0.1",
        "--duration", "1.5", "--outbox", str(tmp_path / "outbox.sqlite"),
        columns=120,
    )  # fmt: skip

    assert status == 0, output
    assert "(connected)" in output  # it was live: frames were drawn while it ran
    screen = final_screen(output)
    assert screen.count("producer ") == 1
    assert screen.count("(stopped)") == 1
