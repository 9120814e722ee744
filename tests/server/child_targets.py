"""Child entry points for the job runner tests.

The forkserver child imports these by module name, so they are top-level functions of an
importable module (this directory is on ``sys.path`` under pytest's default import mode,
and the forkserver inherits the parent's ``sys.path``). Each has ``run_job``'s signature.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from multiprocessing.connection import Connection

from forkwire.server.interpreter import Limits, evaluate_batch
from forkwire.server.worker import encode_answer

#: How long a "hanging" child sleeps: far longer than any test waits for it.
HANG_SECONDS = 60.0
#: How long each job of the concurrency test keeps its child busy.
BUSY_SECONDS = 0.3


def report_interval(conn: Connection, limits: Limits, max_reply: int) -> None:
    """Stay busy for BUSY_SECONDS, then answer with the monotonic [start, end] of the work."""
    conn.recv()
    start = time.monotonic()
    time.sleep(BUSY_SECONDS)
    conn.send(encode_answer([start, time.monotonic()], [], max_reply=max_reply))
    conn.close()


def act_on_directive(conn: Connection, limits: Limits, max_reply: int) -> None:
    """Misbehave as the first op asks ('#hang', '#raise', '#exit', '#garbage', '#stop-mid-reply',
    '#oversize'),
    else evaluate."""
    ops = conn.recv()
    directive = ops[0] if ops else ""
    if directive == "#hang":
        time.sleep(HANG_SECONDS)
    elif directive == "#raise":
        raise RuntimeError("child target failed on purpose")
    elif directive == "#exit":
        os._exit(3)
    elif directive == "#garbage":
        conn.send("not a (results, errors) pair")
        return
    elif directive == "#oversize":
        # Announce a reply of 1 GiB: the parent must refuse it without reading it.
        os.write(conn.fileno(), struct.pack("!i", 1 << 30))
        time.sleep(HANG_SECONDS)
    elif directive == "#stop-mid-reply":
        # Announce a reply, write half of it, and stop as if SIGSTOPped mid-write.
        os.write(conn.fileno(), struct.pack("!i", 1000) + b"x" * 500)
        os.kill(os.getpid(), signal.SIGSTOP)
    conn.send(encode_answer(*evaluate_batch(ops, limits), max_reply=max_reply))
    conn.close()
