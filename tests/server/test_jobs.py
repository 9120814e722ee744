"""The job runner: one fresh child per job, bounded concurrency, timeouts and crashes contained."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import child_targets
import pytest

from forkwire.server.interpreter import Limits
from forkwire.server.jobs import JobRunner

#: How long a test lets the forkserver reap a killed child before calling it a leak.
REAP_WAIT = 2.0


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_condition(check: Callable[[], bool], within: float = REAP_WAIT) -> bool:
    """Poll ``check`` from the event loop until it holds or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def assert_all_gone(runner: JobRunner, pids: list[int]) -> None:
    assert runner.children == []
    assert runner.counters.running == 0
    gone = await wait_for_condition(lambda: not any(pid_exists(pid) for pid in pids))
    assert gone, [pid for pid in pids if pid_exists(pid)]


def codes_of(errors: list[tuple[int, str, str]]) -> list[tuple[int, str]]:
    return [(index, code) for index, code, _ in errors]


async def test_each_job_runs_in_its_own_child_and_no_child_survives() -> None:
    """Every job gets a fresh child pid (never the parent) and every child is gone afterwards."""
    runner = JobRunner(workers=2, job_timeout=30)
    outcomes = [await runner.run(["1 + 1"]) for _ in range(3)]
    outcomes += await asyncio.gather(*(runner.run(["2 * 3"]) for _ in range(3)))
    pids = [outcome.pid for outcome in outcomes]
    assert all(isinstance(pid, int) for pid in pids)
    assert len(set(pids)) == len(pids)
    assert os.getpid() not in pids
    assert [outcome.results for outcome in outcomes] == [[2]] * 3 + [[6]] * 3
    await assert_all_gone(runner, [pid for pid in pids if pid is not None])
    assert runner.counters.started == runner.counters.finished == 6
    assert runner.counters.expressions == 6


async def test_results_come_back_in_order() -> None:
    """Results follow the order of the ops within a job, and each job gets its own answers."""
    runner = JobRunner(workers=3, job_timeout=30)
    jobs = [[f"{n} * 10", f"{n} - 100", f"{n} / 2", "1 / 0", "x"] for n in range(5)]
    outcomes = await asyncio.gather(*(runner.run(ops) for ops in jobs))
    for n, outcome in enumerate(outcomes):
        assert outcome.results == [n * 10, n - 100, n / 2, None, None]
        assert codes_of(outcome.errors) == [(3, "division_by_zero"), (4, "syntax")]
        assert outcome.ms > 0
    await assert_all_gone(runner, [o.pid for o in outcomes if o.pid is not None])


async def test_runner_hands_its_limits_to_the_child() -> None:
    """The child evaluates with the runner's Limits, not the defaults."""
    runner = JobRunner(workers=1, job_timeout=30, limits=Limits(max_depth=1))
    outcome = await runner.run(["(1)", "((1))"])
    assert outcome.results == [1, None]
    assert codes_of(outcome.errors) == [(1, "too_deep")]


async def test_empty_job_is_answered() -> None:
    """A job with no expressions still runs and answers with nothing."""
    runner = JobRunner(workers=1, job_timeout=30)
    outcome = await runner.run([])
    assert (outcome.results, outcome.errors) == ([], [])


async def test_at_most_workers_children_at_once() -> None:
    """With workers=2, six busy jobs never have more than two children alive at once."""
    runner = JobRunner(workers=2, job_timeout=30, target=child_targets.report_interval)
    seen_children: list[int] = []
    seen_running: list[int] = []
    jobs = asyncio.gather(*(runner.run(["start", "end"]) for _ in range(6)))
    while not jobs.done():
        seen_children.append(len(runner.children))
        seen_running.append(runner.counters.running)
        await asyncio.sleep(0.005)
    outcomes = await jobs
    assert max(seen_children) <= 2
    assert max(seen_running) <= 2
    assert max(seen_children) == 2, "two jobs should have overlapped"
    # The children's own clocks (CLOCK_MONOTONIC is system-wide) confirm it.
    intervals = [outcome.results for outcome in outcomes]
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
        key=lambda edge: (edge[0], edge[1]),
    )
    busy = peak = 0
    for _, step in edges:
        busy += step
        peak = max(peak, busy)
    assert peak == 2
    await assert_all_gone(runner, [o.pid for o in outcomes if o.pid is not None])


async def test_job_past_its_timeout_is_killed_and_answered_timeout() -> None:
    """A child that overruns job_timeout is killed, every op answers 'timeout', serving goes on."""
    runner = JobRunner(workers=1, job_timeout=0.5, target=child_targets.act_on_directive)
    outcome = await runner.run(["#hang", "1 + 1", "2"])
    assert outcome.results == [None, None, None]
    assert codes_of(outcome.errors) == [(0, "timeout"), (1, "timeout"), (2, "timeout")]
    assert outcome.ms < child_targets.HANG_SECONDS * 1000
    assert runner.counters.timeouts == 1
    assert outcome.pid is not None
    await assert_all_gone(runner, [outcome.pid])

    after = await runner.run(["1 + 1", "2 * 3"])
    assert after.results == [2, 6]
    assert after.errors == []
    assert runner.counters.timeouts == 1
    await assert_all_gone(runner, [after.pid] if after.pid is not None else [])


async def test_child_killed_mid_job_is_worker_crashed() -> None:
    """A child SIGKILLed while working answers 'worker_crashed' for each expression."""
    runner = JobRunner(workers=1, job_timeout=30, target=child_targets.act_on_directive)
    job = asyncio.ensure_future(runner.run(["#hang", "1", "2"]))
    assert await wait_for_condition(lambda: bool(runner.children), within=10)
    (pid,) = runner.children
    os.kill(pid, signal.SIGKILL)
    outcome = await job
    assert outcome.pid == pid
    assert outcome.results == [None, None, None]
    assert codes_of(outcome.errors) == [
        (0, "worker_crashed"),
        (1, "worker_crashed"),
        (2, "worker_crashed"),
    ]
    assert runner.counters.crashes == 1
    assert runner.counters.timeouts == 0
    await assert_all_gone(runner, [pid])
    assert (await runner.run(["3 - 1"])).results == [2]


@pytest.mark.parametrize("directive", ["#raise", "#exit"])
async def test_child_that_fails_is_worker_crashed(directive: str) -> None:
    """A child that raises or exits nonzero before answering gives 'worker_crashed' per op."""
    runner = JobRunner(workers=1, job_timeout=30, target=child_targets.act_on_directive)
    outcome = await runner.run([directive, "1 + 1"])
    assert outcome.results == [None, None]
    assert codes_of(outcome.errors) == [(0, "worker_crashed"), (1, "worker_crashed")]
    assert runner.counters.crashes == 1
    assert outcome.pid is not None
    await assert_all_gone(runner, [outcome.pid])
    assert (await runner.run(["1 + 1"])).results == [2]


async def test_child_with_a_malformed_reply_is_worker_crashed() -> None:
    """A child that answers something other than (results, errors) gives 'worker_crashed'."""
    runner = JobRunner(workers=1, job_timeout=30, target=child_targets.act_on_directive)
    outcome = await runner.run(["#garbage", "1"])
    assert codes_of(outcome.errors) == [(0, "worker_crashed"), (1, "worker_crashed")]


@pytest.mark.parametrize(("workers", "job_timeout"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0)])
def test_runner_rejects_bad_settings(workers: int, job_timeout: float) -> None:
    """workers must be at least 1 and job_timeout positive."""
    with pytest.raises(ValueError, match=r"workers|job_timeout"):
        JobRunner(workers=workers, job_timeout=job_timeout)
