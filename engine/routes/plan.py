"""What a route sends next: one patient's messages in log order, critical patients first.

A pure state machine (no I/O, no clock: times are handed in), so its rules
are property-tested on their own:

- a patient has at most one message in flight, and its messages leave in the
  order they were added (log order); different patients go in parallel;
- the next patient served is the one with the most urgent message waiting
  (a billing message ahead of a critical one for the same patient goes
  first, at critical priority: priority inheritance), so a critical message
  waits for its own patient's earlier messages only, never for another
  patient's backlog; between standard and batch, batch gets one turn in
  every `batch_every` so it never starves;
- with `fifo`, every message counts as one lane: log order across patients;
- a message to retry (AE, a timeout) keeps its place at its patient's head
  until its time comes; a refused one leaves the plan, and with `hold` its
  patient waits until `release`.
"""

from __future__ import annotations

import collections
import heapq
from typing import Final, final

from engine.core.model import Lane
from engine.routes.selection import Candidate

__all__ = ["DeliveryPlan", "Pending"]

_LANES: Final = (Lane.CRITICAL, Lane.STANDARD, Lane.BATCH)


@final
class Pending:
    """A message waiting on a route, with what the route has learnt of it so far."""

    __slots__ = ("attempts", "candidate", "resend", "seen_at")

    def __init__(self, candidate: Candidate, seen_at: float) -> None:
        self.candidate = candidate
        self.seen_at = seen_at  # when the route first saw it (monotonic): its age in the backlog
        self.attempts = 0  # answered attempts that failed (AE, a timeout): they set the back-off
        self.resend = False  # an earlier attempt may have reached the destination: the next may duplicate it


@final
class DeliveryPlan:
    """The waiting messages of one route, by patient, and which one goes next."""

    def __init__(self, *, fifo: bool = False, batch_every: int = 8) -> None:
        self._fifo = fifo
        self._batch_every = batch_every
        self._queues: dict[str, collections.deque[Pending]] = {}
        self._lane_counts: dict[str, list[int]] = {}
        self._busy: set[str] = set()  # a message in flight or waiting to be retried
        self._held: set[str] = set()
        self._ready: list[list[tuple[int, int, str]]] = [[], [], []]  # per rank: (head lsn, version, patient)
        self._version: dict[str, int] = {}
        self._later: list[tuple[float, int, str]] = []  # (due, lsn, patient) of messages waiting to be retried
        self._backlog: list[dict[int, float]] = [{}, {}, {}]  # per lane: lsn -> seen_at, oldest first
        self._standard_run = 0
        self.size = 0
        self.bytes = 0

    # -- adding and taking ----------------------------------------------------------

    def add(self, candidate: Candidate, seen_at: float) -> Pending:
        """A message the route must deliver, in log order for its patient."""
        patient = candidate.patient
        queue = self._queues.get(patient)
        if queue is None:
            queue = self._queues[patient] = collections.deque()
            self._lane_counts[patient] = [0, 0, 0]
        pending = Pending(candidate, seen_at)
        queue.append(pending)
        rank = candidate.lane.rank
        self._lane_counts[patient][rank] += 1
        self._backlog[rank][candidate.lsn] = seen_at
        self.size += 1
        self.bytes += len(candidate.raw)
        if patient not in self._busy and patient not in self._held:
            self._make_ready(patient)
        return pending

    def take(self, now: float) -> Pending | None:
        """The next message to send (its patient is then busy until `done`, `retry` or `refuse`), or None."""
        self._wake(now)
        rank = self._next_rank()
        while rank is not None:
            heap = self._ready[rank]
            _, version, patient = heapq.heappop(heap)
            if self._version.get(patient) == version and patient not in self._busy:
                self._busy.add(patient)
                self._version[patient] = version + 1
                self._count_turn(rank)
                return self._queues[patient][0]
            rank = self._next_rank()
        return None

    def next_due(self) -> float | None:
        """When the earliest retry comes due (None: none waits)."""
        return self._later[0][0] if self._later else None

    # -- what came of a delivery ------------------------------------------------------

    def done(self, pending: Pending) -> None:
        """Delivered: the patient's next message may go."""
        self._remove_head(pending)
        self._busy.discard(pending.candidate.patient)
        self._make_ready(pending.candidate.patient)

    def retry(self, pending: Pending, due: float, *, count: bool = True) -> None:
        """Not delivered, try again at `due`: it stays first for its patient (`count`: an attempt that failed)."""
        if count:
            pending.attempts += 1
        heapq.heappush(self._later, (due, pending.candidate.lsn, pending.candidate.patient))

    def refuse(self, pending: Pending, *, hold: bool) -> None:
        """Refused for good: out of the plan; with `hold` its patient waits for `release`."""
        patient = pending.candidate.patient
        self._remove_head(pending)
        self._busy.discard(patient)
        if hold:
            self._held.add(patient)
        else:
            self._make_ready(patient)

    def hold(self, patient: str) -> None:
        """The patient waits (a refusal kept from before a restart) until `release`."""
        self._held.add(patient)

    def release(self, patient: str) -> None:
        """A held patient's messages may go again."""
        self._held.discard(patient)
        if patient not in self._busy:
            self._make_ready(patient)

    def put_first(self, candidate: Candidate, seen_at: float) -> None:
        """A refused message an operator retries: next for its patient (after one in flight), who is released."""
        patient = candidate.patient
        self.add(candidate, seen_at)
        queue = self._queues[patient]
        pending = queue.pop()
        queue.insert(1 if patient in self._busy else 0, pending)
        self.release(patient)

    # -- what an operator sees -------------------------------------------------------

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def backlog(self) -> dict[Lane, tuple[int, float | None]]:
        """Per lane: messages waiting (in flight included), and when the oldest was first seen."""
        out: dict[Lane, tuple[int, float | None]] = {}
        for lane in _LANES:
            waiting = self._backlog[lane.rank]
            out[lane] = (len(waiting), next(iter(waiting.values()), None))
        return out

    # -- inside ------------------------------------------------------------------------

    def _remove_head(self, pending: Pending) -> None:
        candidate = pending.candidate
        queue = self._queues[candidate.patient]
        assert queue, "a message settled twice"
        assert queue[0] is pending, "only a patient's first message is ever in flight"
        queue.popleft()
        rank = candidate.lane.rank
        self._lane_counts[candidate.patient][rank] -= 1
        self._backlog[rank].pop(candidate.lsn, None)
        self.size -= 1
        self.bytes -= len(candidate.raw)
        if not queue:
            del self._queues[candidate.patient]
            del self._lane_counts[candidate.patient]
            self._version.pop(candidate.patient, None)

    def _make_ready(self, patient: str) -> None:
        """Push the patient to the ready heap of its most urgent waiting message (older entries go stale)."""
        if patient in self._held:
            return
        queue = self._queues.get(patient)
        if not queue:
            return
        counts = self._lane_counts[patient]
        rank = 0 if self._fifo else next(r for r in range(3) if counts[r])
        version = self._version.get(patient, 0) + 1
        self._version[patient] = version
        heapq.heappush(self._ready[rank], (queue[0].candidate.lsn, version, patient))

    def _wake(self, now: float) -> None:
        """Retries whose time has come: their patients are ready again."""
        while self._later and self._later[0][0] <= now:
            _, _, patient = heapq.heappop(self._later)
            self._busy.discard(patient)
            self._make_ready(patient)

    def _next_rank(self) -> int | None:
        """Critical first; then standard, except that batch gets every `batch_every`th turn."""
        live = [rank for rank in range(3) if self._ready[rank]]
        if not live:
            return None
        if live[0] == 1 and 2 in live and self._standard_run >= self._batch_every:
            return 2
        return live[0]

    def _count_turn(self, rank: int) -> None:
        if rank == 1:
            self._standard_run += 1
        elif rank == 2:
            self._standard_run = 0
