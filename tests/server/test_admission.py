"""The fair admission of jobs to worker slots, without processes: who goes next."""

from __future__ import annotations

import asyncio

import pytest

from forkwire.server.admission import Admission


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_freed_slot_goes_to_the_owner_running_fewest() -> None:
    admission = Admission(slots=2, max_queued=100)
    await admission.acquire("a")
    await admission.acquire("a")
    order: list[str] = []

    async def job(owner: str) -> None:
        await admission.acquire(owner)
        order.append(owner)

    tasks = [asyncio.create_task(job(o)) for o in ["a", "a", "a", "b"]]
    await _settle()
    assert admission.queued == 4
    admission.release("a")  # a runs one, b none: b first, whatever came before it
    await _settle()
    assert order == ["b"]
    admission.release("a")  # a runs none now, b one
    await _settle()
    assert order == ["b", "a"]
    for _ in range(2):
        admission.release("a")
    await asyncio.gather(*tasks)
    assert order == ["b", "a", "a", "a"]


async def test_equal_owners_take_turns() -> None:
    admission = Admission(slots=1, max_queued=100)
    await admission.acquire("x")
    order: list[str] = []

    async def job(owner: str) -> None:
        await admission.acquire(owner)
        order.append(owner)
        admission.release(owner)

    tasks = [asyncio.create_task(job(o)) for o in ["a"] * 3 + ["b"] * 3 + ["c"]]
    await _settle()
    admission.release("x")
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "a", "b", "a", "b"]


async def test_full_counts_jobs_waiting_server_wide() -> None:
    admission = Admission(slots=1, max_queued=2)
    assert not admission.full()
    await admission.acquire("a")
    waiters = [asyncio.create_task(admission.acquire(o)) for o in ["a", "b"]]
    await _settle()
    assert admission.full()
    admission.release("a")
    await _settle()
    assert not admission.full()
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_cancelled_waiter_leaves_no_trace_and_no_slot_is_lost() -> None:
    admission = Admission(slots=1, max_queued=10)
    await admission.acquire("a")
    waiter = asyncio.create_task(admission.acquire("b"))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert admission.queued == 0
    # Handed over and cancelled in the same turn: the slot passes on, not lost.
    handed = asyncio.create_task(admission.acquire("c"))
    await _settle()
    admission.release("a")
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert admission.running == 0
    await asyncio.wait_for(admission.acquire("d"), 1)
    assert admission.running == 1


async def test_an_owner_at_its_cap_leaves_the_other_slots_free() -> None:
    admission = Admission(slots=2, max_queued=100, per_owner=1)
    await admission.acquire("hog")
    more = [asyncio.create_task(admission.acquire("hog")) for _ in range(3)]
    await _settle()
    assert admission.running == 1  # a slot is free, but not for the hog
    await asyncio.wait_for(admission.acquire("small"), 1)  # taken at once
    assert admission.running == 2
    admission.release("small")
    admission.release("hog")
    await _settle()
    assert sum(task.done() for task in more) == 1
    for task in more:
        task.cancel()
    await asyncio.gather(*more, return_exceptions=True)
