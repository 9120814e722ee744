"""Worker slots for TCP jobs, handed out fairly across connections.

The runner runs at most ``workers`` children; without this a connection that pipelines 64
big jobs holds every slot in turn and another connection's small calc waits behind all of
them. Here a freed slot goes to the waiting connection with the fewest jobs running (ties:
the one served longest ago), so a connection waits for about one job of each other
connection, whatever their backlogs. The runner keeps its own bound (UDP jobs share it);
this only decides whose job goes next.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Hashable


class Admission:
    """Slots for jobs, by owner (a connection).

    Args:
        slots: jobs running at once (the runner's workers).
        max_queued: jobs waiting for a slot, server-wide, before :meth:`full` says so.
        per_owner: slots one owner may hold at once; the rest stay free for the others,
            since a job cannot be stopped once started (a hog's 8-second jobs would
            otherwise hold every worker when a small calc arrives). None: all of them.
    """

    def __init__(self, slots: int, max_queued: int, per_owner: int | None = None) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.max_queued = max_queued
        self.per_owner = slots if per_owner is None else max(1, per_owner)
        #: Jobs waiting for a slot right now.
        self.queued = 0
        self._busy = 0
        self._running: Counter[Hashable] = Counter()
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}
        # When each owner was last given a slot (a count): the tie-break, so that among
        # owners running as many jobs, the one served longest ago goes first.
        self._served: dict[Hashable, int] = {}
        self._turns = 0

    @property
    def running(self) -> int:
        """Slots taken right now."""
        return self._busy

    def full(self) -> bool:
        """Whether a new job would exceed ``max_queued`` waiting jobs."""
        return self._busy >= self.slots and self.queued >= self.max_queued

    async def acquire(self, owner: Hashable) -> None:
        """Wait for a slot; give it back with :meth:`release`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(owner, deque()).append(future)
        self.queued += 1
        self._hand_over()  # maybe to this one at once: awaiting a done future returns
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(owner)  # handed over as we were cancelled: pass it on
            else:
                self._forget(owner, future)
            raise

    def release(self, owner: Hashable) -> None:
        """Give a slot back; it goes to the owner that waits and runs least."""
        self._running[owner] -= 1
        if self._running[owner] <= 0:
            del self._running[owner]
            self._forget_owner(owner)
        self._busy -= 1
        self._hand_over()

    def _take(self, owner: Hashable) -> None:
        self._busy += 1
        self._running[owner] += 1
        self._turns += 1
        self._served[owner] = self._turns

    def _hand_over(self) -> None:
        running, served, cap = self._running, self._served, self.per_owner
        while self._busy < self.slots and self._waiting:
            owners = [o for o in self._waiting if running.get(o, 0) < cap]
            if not owners:
                return  # the free slots are kept for owners not at their cap
            owner = min(owners, key=lambda o: (running.get(o, 0), served.get(o, 0)))
            queue = self._waiting[owner]
            future = queue.popleft()
            self.queued -= 1
            if not queue:
                del self._waiting[owner]
            self._take(owner)
            future.set_result(None)

    def _forget_owner(self, owner: Hashable) -> None:
        if owner not in self._running and owner not in self._waiting:
            self._served.pop(owner, None)  # an owner that comes back is served early

    def _forget(self, owner: Hashable, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(owner)
        if queue is None or future not in queue:
            return
        queue.remove(future)
        self.queued -= 1
        if not queue:
            del self._waiting[owner]
            self._forget_owner(owner)
