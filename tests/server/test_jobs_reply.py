"""A job's reply: read without blocking the event loop, under job_timeout, and bounded by
max_reply (the child encodes it, within the bound)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import child_targets
import pytest
from pydantic import ValidationError
from test_app import Peer, running, settings
from test_jobs import assert_all_gone, codes_of, pid_exists, wait_for_condition

from forkwire.protocol import (
    Calc,
    CalcResult,
    Error,
    ErrorCode,
    ExpressionCode,
    Hello,
    Stats,
    StatsResult,
    Welcome,
)
from forkwire.server.config import Settings
from forkwire.server.jobs import JobRunner
from forkwire.server.worker import ENVELOPE, encode_answer


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


# --- the reply's size bound, and the child's own encoding --------------------------------


def test_an_answer_that_fits_is_plain_json() -> None:
    """Within the bound the arrays are the JSON of the values and errors, untouched."""
    answer = encode_answer([1, 2.5, None, 10**30], [(2, "syntax", "bad")], max_reply=4096)
    assert json.loads(answer.results) == [1, 2.5, None, 10**30]
    assert json.loads(answer.errors) == [{"index": 2, "code": "syntax", "message": "bad"}]
    assert (answer.size, answer.error_count, answer.oversize) == (4, 1, 0)


def test_a_result_past_the_bound_is_too_large_and_later_small_ones_still_fit() -> None:
    """A 3,000-digit result cannot fit 2 KiB: it alone becomes too_large, in index order."""
    results: list[int | float | None] = [1, 10**2999, None, 7]
    answer = encode_answer(results, [(2, "syntax", "bad")], max_reply=2048)
    assert json.loads(answer.results) == [1, None, None, 7]
    codes = [(e["index"], e["code"]) for e in json.loads(answer.errors)]
    assert codes == [(1, ExpressionCode.TOO_LARGE), (2, "syntax")]
    assert len(answer.results) + len(answer.errors) + ENVELOPE <= 2048


def test_errors_that_alone_pass_the_bound_make_the_answer_oversize() -> None:
    errors = [(i, "syntax", "outside the grammar at column 1") for i in range(200)]
    answer = encode_answer([None] * 200, errors, max_reply=2048)
    assert answer.oversize > 2048
    assert (answer.results, answer.errors) == (b"[]", b"[]")


async def test_the_runner_keeps_a_job_within_max_reply() -> None:
    """In a real child: the huge result is too_large, the small ones are answered."""
    runner = JobRunner(workers=1, job_timeout=30, max_reply=2048)
    outcome = await runner.run(["2 + 2", "9 ** 3000", "3 * 3"])
    assert outcome.results == [4, None, 9]
    assert codes_of(outcome.errors) == [(1, "too_large")]


async def test_a_child_announcing_more_than_max_reply_is_refused_unread() -> None:
    runner = JobRunner(
        workers=1, job_timeout=10, max_reply=4096, target=child_targets.act_on_directive
    )
    outcome = await runner.run(["#oversize", "1"])
    assert codes_of(outcome.errors) == [(0, "worker_crashed"), (1, "worker_crashed")]
    assert "over max_reply" in outcome.errors[0][2]
    assert outcome.pid is not None
    await assert_all_gone(runner, [outcome.pid])


async def test_the_server_bounds_calc_replies_by_max_reply(tmp_path: Path) -> None:
    """Over TCP: a result past --max-reply is too_large; a job all of whose errors would
    pass it is answered reply_too_large as a whole; the welcome says the bound."""
    async with running(settings(tmp_path, max_frame=1024, max_reply=2048)) as app:
        assert app.port is not None
        peer = await Peer.connect(app.port)
        await peer.send(Hello(), Calc(id=1, ops=["1 + 1", "9 ** 4000", "5"]))
        welcome = await peer.recv()
        assert isinstance(welcome, Welcome)
        assert welcome.limits["max_reply"] == 2048
        reply = await peer.recv()
        assert isinstance(reply, CalcResult)
        assert reply.results == [2, None, 5]
        assert [(e.index, e.code) for e in reply.errors] == [(1, "too_large")]
        await peer.send(Calc(id=2, ops=["x"] * 150))
        refused = await peer.recv()
        assert isinstance(refused, Error)
        assert (refused.code, refused.ref) == (ErrorCode.REPLY_TOO_LARGE, 2)
        await peer.send(Calc(id=3, ops=["6 * 7"]))  # the connection goes on
        after = await peer.recv()
        assert isinstance(after, CalcResult)
        assert after.results == [42]
        await peer.close()


def test_max_reply_below_max_frame_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_reply"):
        Settings(max_frame=8192, max_reply=4096)
