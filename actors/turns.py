"""The turn gate: how many actor turns run at once, and which waiting turn goes next.

Actors are cooperative tasks, and the event loop runs ready tasks in arrival
order: under a flood, a patient holding a critical result would take its
turn behind hundreds of billing turns. The gate bounds concurrent turns and,
when a slot frees, hands it to the waiting turn of highest priority (0 =
critical), then the longest-waiting: an actor inherits the priority of the
most urgent message in its mailbox (DESIGN.md, "Lanes").
"""

from __future__ import annotations

import heapq
import itertools
from typing import final

import anyio

__all__ = ["TurnGate"]


@final
class TurnGate:
    """A counting semaphore whose waiters are served by priority, then arrival."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a turn gate needs at least one slot")
        self.slots = slots
        self._free = slots
        self._waiting: list[tuple[int, int, anyio.Event]] = []
        self._order = itertools.count()

    def try_acquire(self) -> bool:
        """Take a free slot at once if no turn is waiting for one (no checkpoint); False otherwise."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        return False

    async def acquire(self, priority: int) -> None:
        """Wait for a slot; lower `priority` values go first."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            await anyio.lowlevel.checkpoint()
            return
        granted = anyio.Event()
        entry = (priority, next(self._order), granted)
        heapq.heappush(self._waiting, entry)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # the slot came as we were cancelled: pass it on
            else:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def release(self) -> None:
        """Give the slot to the most urgent waiter, or back to the pool."""
        if self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            granted.set()
        else:
            self._free += 1

    @property
    def waiting(self) -> int:
        """Turns waiting for a slot."""
        return len(self._waiting)
