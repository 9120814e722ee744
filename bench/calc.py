"""Benchmark the compute path: interpreter vs CPython ``eval``, and the whole run end to end.

Run as ``python -m bench.calc [--file PATH]``. Everything is measured in this one run on
this machine, and reported as ratios so that runs on different machines compare:

- interpreter: ``evaluate_batch`` over every line, in this process, one core;
- eval: CPython's ``eval`` over the same lines (a reference only; the product never calls
  it), with the same per-line error handling;
- end to end: a ``forkwire-server`` subprocess on a free port, and the ``forkwire calc``
  CLI as a second subprocess, timed from its start until it exits with the results file
  written (file read, frames, child processes, results written in order).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from forkwire.client.local import local_server
from forkwire.server.interpreter import evaluate_batch

REPO = Path(__file__).resolve().parents[1]
REAL_FILE = REPO.parent / "shared" / "data" / "operations.txt"


def time_interpreter(lines: list[str]) -> tuple[float, float]:
    """Seconds for the product's interpreter over every line, in process: wall and CPU."""
    started, cpu = time.perf_counter(), time.process_time()
    evaluate_batch(lines)
    return time.perf_counter() - started, time.process_time() - cpu


def time_eval(lines: list[str]) -> tuple[float, float]:
    """Seconds for CPython's eval over the same lines (never used by the product)."""
    started, cpu = time.perf_counter(), time.process_time()
    for line in lines:
        # Errors count as answers, as they do for ours. A bare try costs nothing on 3.11,
        # where contextlib.suppress() would add its own overhead to the reference.
        try:  # noqa: SIM105
            eval(line, {"__builtins__": {}})  # the reference being measured against
        except Exception:
            pass
    return time.perf_counter() - started, time.process_time() - cpu


def time_end_to_end(
    path: Path, port: int, batch: int | None, window: int | None
) -> tuple[float, str]:
    """Seconds for the calc CLI, process start to exit, and its summary line."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.txt"
        args = [sys.executable, "-m", "forkwire.client", "calc", str(path), "-o", str(out)]
        args += ["--port", str(port)]
        if batch is not None:
            args += ["--batch", str(batch)]
        if window is not None:
            args += ["--window", str(window)]
        started = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"calc failed: {done.stderr}")
        return seconds, done.stdout.strip()


async def time_with_server(
    path: Path, batch: int | None, window: int | None, server_args: list[str]
) -> tuple[float, str]:
    """:func:`time_end_to_end` against a server of our own, started and stopped here."""
    async with local_server("--db", "memory://", *server_args) as server:
        # In a thread, so the loop keeps reading the server's log while the CLI runs.
        return await asyncio.to_thread(time_end_to_end, path, server.port, batch, window)


def main() -> None:
    """Measure and print the three timings and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = REAL_FILE if REAL_FILE.exists() else REPO / "operations.txt"
    parser.add_argument("--file", type=Path, default=default, help=f"default: {default}")
    parser.add_argument("--batch", type=int, help="lines per job (default: the CLI's)")
    parser.add_argument("--window", type=int, help="jobs in flight (default: the CLI's)")
    parser.add_argument("--workers", type=int, default=None, help="server children")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    args = parser.parse_args()
    # The server and the CLI run as an installed forkwire does: from compiled bytecode
    # (pip compiles a package as it installs it), not compiling every module of it on
    # each start, as they would where PYTHONDONTWRITEBYTECODE is set.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    lines = args.file.read_text(encoding="utf-8").splitlines()
    print(f"file: {args.file} ({len(lines):,} lines); best of {args.repeat} runs each")
    # Best of N: the machine is shared, and noise only ever adds time. The in-process
    # pair is also timed in CPU seconds, which other work on the machine disturbs less.
    ours_runs = [time_interpreter(lines) for _ in range(args.repeat)]
    reference_runs = [time_eval(lines) for _ in range(args.repeat)]
    ours, ours_cpu = min(wall for wall, _ in ours_runs), min(cpu for _, cpu in ours_runs)
    reference = min(wall for wall, _ in reference_runs)
    reference_cpu = min(cpu for _, cpu in reference_runs)
    extra = ["--workers", str(args.workers)] if args.workers else []
    runs = [
        asyncio.run(time_with_server(args.file, args.batch, args.window, extra))
        for _ in range(args.repeat)
    ]
    end_to_end, summary = min(runs)
    print(f"interpreter (in process, 1 core): {ours:8.3f} s   ({ours_cpu:.3f} s CPU)")
    print(f"CPython eval (reference)        : {reference:8.3f} s   ({reference_cpu:.3f} s CPU)")
    print(f"end to end (calc CLI, server)   : {end_to_end:8.3f} s   [{summary}]")
    print(
        f"eval / interpreter              : {reference / ours:8.2f}x  (goal >= 6; in CPU "
        f"seconds {reference_cpu / ours_cpu:.2f}x)"
    )
    print(f"end to end / eval               : {end_to_end / reference:8.2f}x  (goal <= 0.35)")


if __name__ == "__main__":
    main()
