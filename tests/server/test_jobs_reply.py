"""A job's reply is read without blocking the event loop, and job_timeout covers it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import child_targets
from test_app import Peer, running, settings
from test_jobs import assert_all_gone, codes_of, pid_exists, wait_for_condition

from forkwire.protocol import Calc, CalcResult, Stats, StatsResult
from forkwire.server.jobs import JobRunner


async def test_a_child_stopped_mid_reply_stalls_only_its_own_job() -> None:
    """Half a reply and SIGSTOP: the loop keeps turning, the job answers timeout, the child dies."""
    runner = JobRunner(workers=2, job_timeout=1.0, target=child_targets.act_on_directive)
    stalled = asyncio.create_task(runner.run(["#stop-mid-reply", "1 + 1"]))
    ticks = 0
    while not stalled.done():
        await asyncio.sleep(0.01)
        ticks += 1
    outcome = stalled.result()
    assert codes_of(outcome.errors) == [(0, "timeout"), (1, "timeout")]
    # About 100 turns in a second; a blocked loop would manage one.
    assert ticks > 20
    assert runner.counters.timeouts == 1
    assert outcome.pid is not None
    await assert_all_gone(runner, [outcome.pid])
    assert not pid_exists(outcome.pid)


async def test_the_server_answers_others_while_a_child_is_stopped_mid_reply(
    tmp_path: Path,
) -> None:
    """Stats and another calc are answered while one job's child is stuck in its reply."""
    async with running(settings(tmp_path, job_timeout=3.0)) as app:
        app.runner.target = child_targets.act_on_directive
        assert app.port is not None
        stuck, other = await Peer.connect(app.port), await Peer.connect(app.port)
        await stuck.send(Calc(id=1, ops=["#stop-mid-reply", "2"]))
        # Wait until the child has written its half reply and stopped.
        assert await wait_for_condition(lambda: app.runner.counters.running > 0, within=5)
        await asyncio.sleep(0.2)
        asked = time.monotonic()
        await other.send(Stats(), Calc(id=2, ops=["6 * 7"]))
        stats = await other.recv()
        answer = await other.recv()
        answered_in = time.monotonic() - asked
        assert isinstance(stats, StatsResult)
        assert stats.counters["jobs_running"] >= 1
        assert isinstance(answer, CalcResult)
        assert answer.results == [42]
        assert answered_in < 2.0, "answered only after the stuck job timed out"
        late = await stuck.recv()
        assert isinstance(late, CalcResult)
        assert [e.code for e in late.errors] == ["timeout", "timeout"]
        assert app.runner.children == []
        await stuck.close()
        await other.close()
