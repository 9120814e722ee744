"""The shared network of one sensor fleet: a fixed number of messages in flight.

A slot is one ``readings`` frame (up to ``--batch`` readings), held from the moment it is
sent until the server acknowledges it, not until the write returns: a write only proves
the kernel buffered the bytes, while the ack proves the readings were committed. Bounding
unacked frames bounds what a slow or stalled server can leave hanging, and what a
reconnect has to resend at once; MQTT's receive maximum and NATS's max pending acks are
the same idea.
"""

from __future__ import annotations

import asyncio


class Network:
    """At most ``slots`` frames in flight, across every sensor that shares this object.

    Args:
        slots: frames that may be sent and not yet acked. The design default of 5 keeps
            the pipe busy over a LAN round trip without letting one fleet flood a server.
    """

    def __init__(self, slots: int = 5) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self._semaphore = asyncio.Semaphore(slots)
        self._in_flight = 0
        self._max_in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Slots taken right now."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most slots ever taken at once (the high-water mark)."""
        return self._max_in_flight

    async def acquire(self) -> None:
        """Wait for one free slot and take it."""
        await self._semaphore.acquire()
        self._took(1)

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots (their frames were answered, or never sent).

        Raises:
            ValueError: more slots than are taken; that would let the fleet exceed its
                bound silently, so it is a bug in the caller.
        """
        if count < 0 or count > self._in_flight:
            raise ValueError(f"cannot release {count} slots, {self._in_flight} are taken")
        for _ in range(count):
            self._semaphore.release()
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()

    def release_all(self) -> int:
        """Give back every slot (the connection was lost); return how many were taken."""
        count = self._in_flight
        self.release(count)
        return count

    async def wait_idle(self) -> None:
        """Wait until no slot is taken."""
        await self._idle.wait()

    def _took(self, count: int) -> None:
        self._in_flight += count
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        self._idle.clear()
