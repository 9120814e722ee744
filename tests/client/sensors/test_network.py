"""The fleet's network: a bounded number of slots, held until released, with a high-water mark."""

from __future__ import annotations

import asyncio

import pytest

from forkwire.client.sensors.network import Network


async def test_acquire_counts_in_flight_and_high_water_mark() -> None:
    """Taking and giving back slots moves in_flight; max_in_flight keeps the peak."""
    network = Network(3)
    await network.acquire()
    await network.acquire()
    assert (network.in_flight, network.max_in_flight) == (2, 2)
    network.release()
    assert (network.in_flight, network.max_in_flight) == (1, 2)


async def test_acquire_waits_when_every_slot_is_taken() -> None:
    """A full network makes the next acquire wait until a release."""
    network = Network(1)
    await network.acquire()
    waiter = asyncio.create_task(network.acquire())
    await asyncio.sleep(0)  # let the waiter run up to its wait
    assert not waiter.done()
    network.release()
    await asyncio.wait_for(waiter, 1.0)
    assert network.in_flight == 1


async def test_many_tasks_never_exceed_the_slots() -> None:
    """Twenty concurrent holders never have more than `slots` slots at once."""
    network = Network(5)
    gate = asyncio.Event()

    async def hold() -> None:
        await network.acquire()
        await gate.wait()
        network.release()

    tasks = [asyncio.create_task(hold()) for _ in range(20)]
    await asyncio.sleep(0)
    assert network.in_flight == 5
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert (network.in_flight, network.max_in_flight) == (0, 5)


async def test_release_all_and_wait_idle() -> None:
    """release_all gives back every slot and wakes wait_idle."""
    network = Network(5)
    for _ in range(4):
        await network.acquire()
    idle = asyncio.create_task(network.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    assert network.release_all() == 4
    await asyncio.wait_for(idle, 1.0)
    assert network.in_flight == 0


async def test_releasing_more_than_taken_is_a_bug() -> None:
    """Releasing a slot nobody holds raises instead of silently widening the bound."""
    network = Network(2)
    await network.acquire()
    with pytest.raises(ValueError, match="cannot release 2"):
        network.release(2)
    assert network.in_flight == 1


def test_slots_must_be_positive() -> None:
    """A network with no slots could never send anything."""
    with pytest.raises(ValueError, match="slots"):
        Network(0)
