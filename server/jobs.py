"""The job runner: one child process and one pipe per job.

The parent creates a ``multiprocessing.Pipe`` and a ``Process`` for each job, sends the
batch and reads the answer through the event loop (non-blocking, in the pipe's own wire
format, all of it under ``job_timeout``), and kills and joins the child in ``finally``.
No threads and no ``Pool``: a job that hangs or crashes takes down only its own child,
which is the point of the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import socket
import struct
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

import structlog

from forkwire.server.interpreter import DEFAULT_LIMITS, Limits, Number
from forkwire.server.worker import Answer, encode_answer, run_job

log = structlog.get_logger("forkwire.jobs")

#: forkserver forks each child from a small, single-threaded server process: safe next to
#: a running event loop (unlike fork) and a few milliseconds per job (spawn costs tens).
DEFAULT_START_METHOD = "forkserver"

#: The largest calc reply by default; ``max_reply`` bounds every job's answer.
DEFAULT_MAX_REPLY = 16 * 1024 * 1024
#: Jobs of more expressions than this have their failure answer encoded in a thread.
_LARGE_JOB = 4096
#: What the pickle around an :class:`Answer` may add to its JSON.
_PICKLE_SLACK = 4096

#: A child's entry: the pipe, the interpreter's limits, and ``max_reply``.
ChildTarget = Callable[[Connection, Limits, int], None]


@dataclass(slots=True)
class JobOutcome:
    """What one job produced: the reply's ``results`` and ``errors`` arrays, as JSON.

    ``oversize`` (bytes) is not 0 when the errors alone would not fit ``max_reply``: the
    arrays are then empty and the job is answered as a whole. ``results`` and ``errors``
    decode the arrays (for tests and small jobs; the server splices the bytes).
    """

    answer: Answer
    pid: int | None
    ms: float

    @property
    def oversize(self) -> int:
        return self.answer.oversize

    @property
    def error_count(self) -> int:
        return self.answer.error_count

    @property
    def results(self) -> list[Number | None]:
        values: list[Number | None] = json.loads(self.answer.results)
        return values

    @property
    def errors(self) -> list[tuple[int, str, str]]:
        return [(e["index"], e["code"], e["message"]) for e in json.loads(self.answer.errors)]


@dataclass(slots=True)
class JobCounters:
    started: int = 0
    finished: int = 0
    timeouts: int = 0
    crashes: int = 0
    expressions: int = 0
    running: int = 0
    pids: set[int] = field(default_factory=set)


class JobRunner:
    """Runs calc jobs in short-lived child processes, at most ``workers`` at once.

    Args:
        workers: children alive at the same time; further jobs wait for a slot.
        job_timeout: seconds a child may take before it is killed.
        limits: the interpreter's limits, handed to every child.
        max_reply: the most bytes a job's answer may take (see ``worker.encode_answer``).
        start_method: the multiprocessing start method, named explicitly.
        target: the child's entry point; tests swap in one that sleeps or crashes.
    """

    def __init__(
        self,
        *,
        workers: int,
        job_timeout: float,
        limits: Limits = DEFAULT_LIMITS,
        max_reply: int = DEFAULT_MAX_REPLY,
        start_method: str = DEFAULT_START_METHOD,
        target: ChildTarget = run_job,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if job_timeout <= 0:
            raise ValueError("job_timeout must be positive")
        self.workers = workers
        self.job_timeout = job_timeout
        self.limits = limits
        self.max_reply = max_reply
        # Typed loosely: typeshed's BaseContext lacks the Process and Pipe that every
        # concrete context has.
        self._ctx: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # popen_forkserver: every child would import it again (1 ms measured) otherwise.
            self._ctx.set_forkserver_preload(
                ["forkwire.server.worker", "multiprocessing.popen_forkserver"]
            )
        #: The child's entry point (public so a test can swap in a misbehaving one).
        self.target = target
        self._slots = asyncio.Semaphore(workers)
        self._children: set[Any] = set()
        self.counters = JobCounters()

    async def start(self) -> None:
        """Start the forkserver now rather than on the first job.

        Starting it imports the interpreter and numpy in a new process, 0.1-0.3 s that the
        first job of a fresh server would otherwise wait for (measured by ``bench.calc``,
        whose server is new for every run). Done in a thread: the loop keeps running.
        """
        if self._ctx.get_start_method() == "forkserver":
            await asyncio.to_thread(multiprocessing.forkserver.ensure_running)

    @property
    def children(self) -> list[int]:
        """Pids of the children alive right now."""
        return [proc.pid for proc in self._children if proc.pid is not None]

    async def run(self, ops: list[str]) -> JobOutcome:
        """Evaluate one batch in a fresh child; never raises for a bad child."""
        async with self._slots:
            return await self._run_in_child(ops)

    async def _run_in_child(self, ops: list[str]) -> JobOutcome:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        counters = self.counters
        counters.started += 1
        counters.running += 1
        counters.expressions += len(ops)
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=self.target,
            args=(child_end, self.limits, self.max_reply),
            name="forkwire-job",
            daemon=True,
        )
        pid: int | None = None
        sock: socket.socket | None = None
        try:
            with _main_module_hidden():
                proc.start()
            pid = proc.pid
            self._children.add(proc)
            # Our copy of the child's end must go, or a dead child would never read as EOF.
            child_end.close()
            # The parent speaks the pipe's wire format itself, on a non-blocking socket, so
            # that a child stopped halfway through reading or writing (SIGSTOP, a full
            # pipe) stalls only its own job: Connection.send/recv would block the loop.
            sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(parent_end.fileno())
            )
            sock.setblocking(False)
            parent_end.close()
            try:
                # job_timeout covers the whole exchange: sending the batch, the work and
                # reading the answer, however slowly the child writes it.
                async with asyncio.timeout(self.job_timeout):
                    await loop.sock_sendall(sock, _frame(ForkingPickler.dumps(ops)))
                    limit = self.max_reply + _PICKLE_SLACK
                    reply = pickle.loads(await _recv_frame(loop, sock, limit))
            except TimeoutError:
                counters.timeouts += 1
                message = f"job exceeded {self.job_timeout:g} s"
                return await self._fail(ops, "timeout", message, pid, started)
            except _Oversize as exc:
                counters.crashes += 1
                message = f"child {pid} answered {exc} bytes, over max_reply"
                return await self._fail(ops, "worker_crashed", message, pid, started)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                counters.crashes += 1
                reason = _describe_death(proc, exc)
                return await self._fail(ops, "worker_crashed", reason, pid, started)
            if not _is_answer(reply, len(ops)):
                counters.crashes += 1
                message = f"child {pid} answered something that is not a result"
                return await self._fail(ops, "worker_crashed", message, pid, started)
            return JobOutcome(Answer(*reply), pid, _ms(started))
        finally:
            counters.running -= 1
            counters.finished += 1
            if sock is not None:
                sock.close()
            parent_end.close()
            child_end.close()
            await self._reap(proc)

    async def _fail(
        self, ops: list[str], code: str, message: str, pid: int | None, started: float
    ) -> JobOutcome:
        """Every expression answered ``code``; a large job's answer is built off the loop."""
        if len(ops) > _LARGE_JOB:
            answer = await asyncio.to_thread(_failed, len(ops), code, message, self.max_reply)
        else:
            answer = _failed(len(ops), code, message, self.max_reply)
        return JobOutcome(answer, pid, _ms(started))

    async def _reap(self, proc: Any) -> None:
        # The answer is in hand (or never coming): kill rather than wait for the child's
        # interpreter to wind down, then wait on its sentinel so join() cannot block.
        if proc.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, OSError, ValueError):
            if proc.exitcode is None:
                proc.kill()
        try:
            await asyncio.wait_for(_readable(asyncio.get_running_loop(), proc.sentinel), 5.0)
        except (TimeoutError, OSError, ValueError):
            log.warning("child_not_reaped", pid=proc.pid)
        proc.join(timeout=1.0)
        if proc.exitcode is not None:
            proc.close()  # frees the sentinel and the other descriptors now, not at GC
            self._children.discard(proc)

    def kill_all(self) -> int:
        """Kill every running child (shutdown past its grace period); return how many."""
        killed = 0
        for proc in list(self._children):
            with contextlib.suppress(ProcessLookupError, OSError, ValueError):
                if proc.exitcode is None:
                    proc.kill()
                    killed += 1
        return killed


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep the child from re-running ``__main__``.

    multiprocessing tells a forkserver child to re-import the parent's main script, and
    CPython 3.11's forkserver never preloads it (it looks for a ``main_path`` key that the
    preparation data names ``init_main_from_path``), so every job would pay for importing
    the whole server again: 30-120 ms measured here, against 2 ms for the fork itself.
    The child runs only ``server.worker``, so it is told there is no main script at all.
    """
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real_main


def _frame(payload: bytes | memoryview) -> bytes:
    """``payload`` as ``Connection.recv_bytes`` reads it: a signed 32-bit big-endian size,
    or -1 and an unsigned 64-bit one for 2 GiB and more."""
    if len(payload) > 0x7FFFFFFF:
        return struct.pack("!iQ", -1, len(payload)) + payload
    return struct.pack("!i", len(payload)) + payload


async def _recv_frame(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, limit: int
) -> bytearray:
    """One message as ``Connection.send_bytes`` writes it, read as it arrives.

    Raises:
        _Oversize: it declares more than ``limit`` bytes (nothing more is read).
    """
    (size,) = struct.unpack("!i", await _recv_exactly(loop, sock, 4))
    if size == -1:
        (size,) = struct.unpack("!Q", await _recv_exactly(loop, sock, 8))
    if size > limit:
        raise _Oversize(size)
    return await _recv_exactly(loop, sock, size)


class _Oversize(Exception):
    """A child announced an answer larger than ``max_reply`` allows."""


def _failed(count: int, code: str, message: str, max_reply: int) -> Answer:
    errors = [(index, code, message) for index in range(count)]
    return encode_answer([None] * count, errors, max_reply=max_reply)


async def _recv_exactly(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int
) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = await loop.sock_recv_into(sock, view[got:])
        if n == 0:
            raise EOFError(f"the pipe closed after {got} of {size} bytes")
        got += n
    return buffer


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await future
    finally:
        loop.remove_reader(fd)


def _is_answer(reply: Any, size: int) -> bool:
    # The pipe carries pickles from our own child, but a child that went wrong must not
    # be able to break the parent: check the shape before trusting it. The arrays are
    # spliced into the reply unparsed, so they must at least be arrays.
    return (
        isinstance(reply, tuple)
        and len(reply) == len(Answer._fields)
        and reply[0] == size
        and all(isinstance(part, bytes) for part in reply[1:3])
        and all(type(part) is int for part in reply[3:])
        and reply[1][:1] == b"[" == reply[2][:1]
        and reply[1][-1:] == b"]" == reply[2][-1:]
    )


def _describe_death(proc: Any, exc: BaseException) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        return f"child {proc.pid} was killed by signal {-code}"
    if code is not None:
        return f"child {proc.pid} exited with status {code} before answering"
    return f"child {proc.pid} closed its pipe before answering ({type(exc).__name__})"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def default_workers() -> int:
    """One child per CPU the process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
