"""A route's durable state: which log records are settled, which were refused, whether it is paused.

The log is the queue, so this is all a route keeps: no copy of a message.
"Settled" means delivered, refused (then it is in `refused` with the
answer), or not for this route. Settled LSNs are kept as ranges, so the
state stays small whatever the log's length: its holes are the messages
still to deliver, and after a restart the route reads the log again from
the first hole (`mark`), skipping what is settled. Delivered messages that
were not yet saved when the node died are delivered again (at least once).
"""

from __future__ import annotations

import bisect
from typing import final

import msgspec

from engine.core.model import Lane

__all__ = ["Ledger", "LedgerState", "Refusal", "Replay"]


@final
class Refusal(msgspec.Struct, frozen=True):
    """A message the destination refused for good, kept for an operator (`vigil routes errors`).

    `answer` is what the destination said (MSA-1, then MSA-3 and ERR's text, cut
    short): it may quote the message, so it is shown with log content only.
    """

    lsn: int
    patient: str
    message_id: str
    message_type: str
    lane: Lane
    code: str  # AR, CR, or "write" for a folder that refuses the file
    answer: str
    at: str
    attempts: int


@final
class Replay(msgspec.Struct):
    """History an operator asked to deliver again (`vigil routes replay`), and how far it has come.

    The log from `next_lsn` to `last_lsn` (the log's end when asked), the
    records recorded at or after `since`, of `patient` and of `message_type`
    when given, that the route's filter takes. `next_lsn` moves on only once
    what was read before it is delivered (or refused): a restart goes on
    from there, at least once.
    """

    next_lsn: int
    last_lsn: int
    since: str = ""
    patient: str = ""
    message_type: str = ""
    asked_by: str = ""  # the user, for the log line when it ends

    def takes(self, recorded_at: str, patient: str, message_type: str) -> bool:
        return (
            recorded_at >= self.since
            and (not self.patient or patient == self.patient)
            and (not self.message_type or message_type == self.message_type)
        )


@final
class LedgerState(msgspec.Struct, frozen=True):
    """What is saved: settled ranges (inclusive, sorted, apart), refusals, paused, replays under way."""

    settled: list[tuple[int, int]] = []
    refused: list[Refusal] = []
    paused: bool = False
    replays: list[Replay] = []


@final
class Ledger:
    """The settled ranges and the refusals, in memory, with a flag saying they changed since the last save."""

    def __init__(self, state: LedgerState) -> None:
        self._starts = [start for start, _ in state.settled]
        self._ends = [end for _, end in state.settled]
        self.refused: dict[int, Refusal] = {r.lsn: r for r in state.refused}
        self.paused = state.paused
        self.replays = list(state.replays)
        self.dirty = False

    @classmethod
    def starting_at(cls, last_lsn: int) -> Ledger:
        """A new route: what the log holds already is settled (history is loaded by a replay, if wanted)."""
        ledger = cls(LedgerState(settled=[(1, last_lsn)] if last_lsn > 0 else []))
        ledger.dirty = True
        return ledger

    def state(self) -> LedgerState:
        """The state to save (and the flag is cleared)."""
        self.dirty = False
        return LedgerState(
            list(zip(self._starts, self._ends, strict=True)),
            sorted(self.refused.values(), key=_lsn),
            self.paused,
            [msgspec.structs.replace(r) for r in self.replays],
        )

    @property
    def mark(self) -> int:
        """Every LSN up to this one is settled."""
        return self._ends[0] if self._starts and self._starts[0] == 1 else 0

    @property
    def needs_from(self) -> int:
        """The lowest LSN the route may still read: its first unsettled, a refusal to send again, a replay's next."""
        return min([self.mark + 1, *self.refused, *(r.next_lsn for r in self.replays)])

    @property
    def ranges(self) -> int:
        return len(self._starts)

    def is_settled(self, lsn: int) -> bool:
        i = bisect.bisect_right(self._starts, lsn) - 1
        return i >= 0 and self._ends[i] >= lsn

    def settle(self, lsn: int) -> None:
        """One LSN settled (settling one twice is harmless)."""
        self.settle_range(lsn, lsn)

    def settle_range(self, first: int, last: int) -> None:
        """LSNs first..last settled, merged with the ranges they touch."""
        starts, ends = self._starts, self._ends
        i = bisect.bisect_left(ends, first - 1)  # the first range that ends at or after first - 1
        j = bisect.bisect_right(starts, last + 1)  # ranges from i to j - 1 touch or overlap
        if i < j:
            first, last = min(first, starts[i]), max(last, ends[j - 1])
        starts[i:j] = [first]
        ends[i:j] = [last]
        self.dirty = True

    def unsettle(self, lsn: int) -> None:
        """An LSN to deliver again (an operator retries a refusal): its range is split around it."""
        i = bisect.bisect_right(self._starts, lsn) - 1
        if i < 0 or self._ends[i] < lsn:
            return
        start, end = self._starts[i], self._ends[i]
        pieces = [(s, e) for s, e in ((start, lsn - 1), (lsn + 1, end)) if s <= e]
        self._starts[i : i + 1] = [s for s, _ in pieces]
        self._ends[i : i + 1] = [e for _, e in pieces]
        self.dirty = True

    def refuse(self, refusal: Refusal) -> None:
        """Refused for good: kept for an operator, and settled (the route goes on past it)."""
        self.refused[refusal.lsn] = refusal
        self.settle(refusal.lsn)

    def take_refusal(self, lsn: int) -> Refusal | None:
        """A refusal an operator acts on, out of the list (None: no such refusal)."""
        refusal = self.refused.pop(lsn, None)
        if refusal is not None:
            self.dirty = True
        return refusal

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.dirty = True


def _lsn(refusal: Refusal) -> int:
    return refusal.lsn
