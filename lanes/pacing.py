"""Pacing: batch work steps aside on the event loop while a critical or standard message is in flight.

The lane scheduler decides which item *starts* next. But a billing message is
also classified, parsed, appended, acknowledged and handed to its patient's
actor on the same event loop as a critical result, and each of the critical
message's hops (read, admit, the lane worker, the log, the answer) waits its
turn behind every batch task ready on that loop. Under sixteen billing
connections that was a critical ACK p50 of 4 → 9 ms, whichever lane mode.

The pacer is the cooperative half of the answer. The node marks each urgent
(critical or standard) message from its classification to its answer
(`urgent`), and every unit of batch work awaits `pace` before it runs:

- nothing urgent in flight: `pace` returns at once (no turn of the loop is
  taken: batch alone runs at full speed);
- an urgent message in flight: `pace` waits until none is, so after one turn
  the loop holds only that message's work; but never longer than
  `wait_max_ms` at a time, so steady standard traffic slows batch and cannot
  stop it (lanes never buy isolation by starving batch).

Parked batch units are let go a few per turn of the loop (`release_per_turn`),
not all at once: a herd of them woken together would be one long turn in
front of the next critical message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, final

import anyio
import anyio.lowlevel
import msgspec

__all__ = ["Pacer", "PacingSettings", "PacingStatistics"]


@final
class PacingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[lanes.pacing]`: how batch work yields to urgent messages.

    Attributes:
        enabled: off, batch work never waits (the benchmark's comparison).
        wait_max_ms: the longest one unit of batch work waits for urgent
            messages to be answered; then it runs anyway.
        release_per_turn: parked batch units let go per turn of the loop once
            nothing urgent is in flight.
    """

    enabled: bool = True
    wait_max_ms: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 20.0
    release_per_turn: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 4


@final
class PacingStatistics(msgspec.Struct, frozen=True):
    """What the pacer did: urgent messages in flight now, batch units that waited, and those that waited their most."""

    urgent_in_flight: int
    batch_waits: int
    batch_waits_maxed: int
    parked: int


@final
class Pacer:
    """Counts urgent messages in flight (`urgent`); batch work awaits `pace` before each unit."""

    def __init__(self, settings: PacingSettings) -> None:
        self.settings = settings
        self._wait_max_s = settings.wait_max_ms / 1000
        self._urgent = 0
        self._clear: anyio.Event | None = None  # set when the urgent messages in flight are answered
        self._woken = 0  # batch units woken since `_clear` was set: each waits its turn
        self._parked = 0
        self._waits = 0
        self._maxed = 0

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """One critical or standard message in flight, for the duration of the block."""
        if self._clear is None:
            self._clear, self._woken = anyio.Event(), 0
        self._urgent += 1
        try:
            yield
        finally:
            self._urgent -= 1
            if self._urgent == 0 and self._clear is not None:
                self._clear.set()  # wakes the parked units; the hop it adds is theirs, not the answered message's
                self._clear = None

    async def pace(self) -> None:
        """Before a unit of batch work: at once if nothing urgent is in flight, else once none is (or `wait_max_ms`)."""
        if self._clear is None or not self.settings.enabled:
            return
        self._waits += 1
        self._parked += 1
        try:
            with anyio.move_on_after(self._wait_max_s) as waited:
                while (clear := self._clear) is not None:
                    await clear.wait()
                    await self._turn()
            if waited.cancelled_caught:
                self._maxed += 1
        finally:
            self._parked -= 1

    async def _turn(self) -> None:
        """A woken unit's place: the k-th since the urgent messages were answered waits k // release_per_turn turns."""
        rank = self._woken
        self._woken += 1
        for _ in range(rank // self.settings.release_per_turn):
            await anyio.lowlevel.checkpoint()

    def statistics(self) -> PacingStatistics:
        """Counters for `vigil status`."""
        return PacingStatistics(self._urgent, self._waits, self._maxed, self._parked)
