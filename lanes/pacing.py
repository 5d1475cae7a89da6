"""Pacing: batch work steps aside on the event loop while a critical or standard message is in flight.

The lane scheduler decides which item *starts* next. But a billing message is
also classified, parsed, appended, acknowledged and handed to its patient's
actor on the same event loop as a critical result, and each of the critical
message's hops (read, admit, the lane worker, the log, the answer) waits its
turn behind every batch task ready on that loop. Under sixteen billing
connections that was a critical ACK p50 of 4 → 9 ms, whichever lane mode.

The pacer is the cooperative half of the answer; its waiting is on by
default (`PacingSettings.enabled` says what it measured), its slices are
always on. The node marks each urgent
(critical or standard) message from its classification to its answer
(`urgent`), and every unit of batch work awaits `pace` before it runs:

- nothing urgent in flight (or pacing off): `pace` returns at once, except
  once batch work has run for `slice_ms` since the loop last looked at its
  sockets (`slice`, also called between the messages a lane worker parses):
  then the unit waits on a timer, which the loop runs only after the socket
  events it polls next. (A plain yield would not do: what is already ready runs before
  any new event, so a critical message arriving during a long batch turn
  would wait for the whole of it and the next one too.)
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
from collections.abc import Callable, Iterator
from typing import Annotated, final

import anyio
import anyio.lowlevel
import msgspec

from actors import loop_clock

__all__ = ["Pacer", "PacingSettings", "PacingStatistics"]


@final
class PacingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[lanes.pacing]`: how batch work yields to urgent messages.

    Attributes:
        enabled: on by default: measured, it took 1 ms off the critical p99
            under billing connections and 1.3 ms off the p50 under every flood
            at once, at no cost to the throughput of 32 connections of mixed
            traffic (see `config.toml`).
        wait_max_ms: the longest one unit of batch work waits for urgent
            messages to be answered; then it runs anyway.
        release_per_turn: parked batch units let go per turn of the loop once
            nothing urgent is in flight.
        slice_ms: batch work that runs between two looks of the loop at its
            sockets (a new critical message is seen at the next look).
    """

    enabled: bool = True
    wait_max_ms: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 20.0
    release_per_turn: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 4
    slice_ms: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0


@final
class PacingStatistics(msgspec.Struct, frozen=True):
    """What the pacer did: urgent messages in flight now, batch units that waited, and those that waited their most."""

    urgent_in_flight: int
    batch_waits: int
    batch_waits_maxed: int
    parked: int
    slices: int


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
        self._slice_s = settings.slice_ms / 1000
        self._slice_began = 0.0  # when batch work last resumed after the loop looked at its sockets
        self._slices = 0
        self._now: Callable[[], float] | None = None  # the loop's clock, resolved at the first `pace`

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """One critical or standard message (or group) in flight, for the duration of the block."""
        self._enter()
        try:
            yield
        finally:
            self._leave()

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """An urgent message waiting for the disk, not the loop: batch work may use the loop meanwhile.

        Without it, batch work waited out every urgent fsync too: under mixed
        traffic on 32 connections some urgent message always was in flight,
        and batch messages waited `wait_max_ms` each.
        """
        self._leave()
        try:
            yield
        finally:
            self._enter()

    def _enter(self) -> None:
        if self._clear is None and self.settings.enabled:  # off: counted (for status), never waited on
            self._clear, self._woken = anyio.Event(), 0
        self._urgent += 1

    def _leave(self) -> None:
        self._urgent -= 1
        if self._urgent == 0 and self._clear is not None:
            self._clear.set()  # wakes the parked units; the hop it adds is theirs, not the answered message's
            self._clear = None

    async def pace(self) -> None:
        """Before a unit of batch work: at once if nothing urgent is in flight, else once none is (or `wait_max_ms`)."""
        if self._clear is None:  # nothing urgent in flight, or pacing off (`_enter` makes no event then)
            await self.slice()
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

    async def slice(self) -> None:
        """Between units of bulk work, enabled or not: at once, unless `slice_ms` have passed since the loop
        last looked at its sockets; then wait for a timer, so that it looks first."""
        if self._now is None:
            self._now = loop_clock()
            self._slice_began = self._now()
        if self._now() - self._slice_began < self._slice_s:
            return
        self._slices += 1
        await anyio.sleep(_AFTER_THE_NEXT_LOOK_S)
        self._slice_began = self._now()

    async def _turn(self) -> None:
        """A woken unit's place: the k-th since the urgent messages were answered waits k // release_per_turn turns."""
        rank = self._woken
        self._woken += 1
        for _ in range(rank // self.settings.release_per_turn):
            await anyio.lowlevel.checkpoint()

    def statistics(self) -> PacingStatistics:
        """Counters for `vigil status`."""
        return PacingStatistics(self._urgent, self._waits, self._maxed, self._parked, self._slices)


# A timer this short is due at the loop's next turn, where it runs after the socket events of that turn.
_AFTER_THE_NEXT_LOOK_S = 1e-6
