"""What runs inside a job's child process.

Kept apart from ``jobs.py`` so that the forkserver preloads only this module and the
interpreter: every job forks from a process that has nothing else in memory.
"""

from __future__ import annotations

import signal
import sys
import traceback
from multiprocessing.connection import Connection

from forkwire.server.childlog import json_stderr_if_asked
from forkwire.server.interpreter import Limits, evaluate_batch


def run_job(conn: Connection, limits: Limits) -> None:
    """Child entry: receive one batch of expressions, send back the results, exit.

    Exceptions never cross the pipe: every failure is an ``(index, code, message)`` entry.
    """
    # The parent owns the child's lifetime; a Ctrl-C that reaches the whole process group
    # must not turn running jobs into crashes while the parent drains them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    json_stderr_if_asked()  # a traceback of this child must not break a JSON log
    try:
        ops = conn.recv()
        conn.send(evaluate_batch(ops, limits))
    except BaseException:
        # Told before the pipe closes: the parent kills the child once it reads EOF, so a
        # traceback printed later (by multiprocessing) would be lost or cut off.
        traceback.print_exc()
        sys.stderr.flush()
        raise SystemExit(1) from None
    finally:
        conn.close()
