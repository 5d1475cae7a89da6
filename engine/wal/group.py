"""Group commit's units: an append waiting for its fsync, and a group framed for one write and fsync."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import final

import anyio
import msgspec

from engine.core.model import Envelope, Lane

__all__ = ["Append", "Framed", "Pending", "Position", "answer", "critical_first"]

Pending = tuple[int, str, int, tuple[str, ...]]  # a framed record: LSN, message id, digest, patients


@final
class Position(msgspec.Struct, frozen=True):
    """Where an appended message is: its LSN, whether it was already there, and when it was recorded.

    `recorded_at` is the time in the record (for what patient actors fold, which
    must equal what a replay of the log folds); None for a duplicate.
    """

    lsn: int
    duplicate: bool = False
    recorded_at: str | None = None


@final
class Append:
    """One caller's append, waiting for its group's fsync."""

    __slots__ = (
        "critical",
        "done",
        "envelopes",
        "epoch",
        "error",
        "partition",
        "patients",
        "positions",
        "size",
        "urgent",
    )

    patients: set[str]

    def __init__(self, envelopes: Sequence[Envelope], partition: int, epoch: int, done: anyio.Event) -> None:
        self.envelopes = envelopes
        self.partition = partition
        self.epoch = epoch
        self.done = done
        self.positions: list[Position] = []
        self.error: BaseException | None = None
        # Only an all-batch append may wait for company before its fsync.
        if len(envelopes) == 1:  # the common case, without the loop
            e = envelopes[0]
            self.size = len(e.raw)  # its original bytes: what bounds a group's write
            self.critical = e.lane is Lane.CRITICAL
            self.urgent = e.lane is not Lane.BATCH
            self.patients = {e.patient, *e.other_patients} if e.patient else set(e.other_patients)
            return
        self.urgent = self.critical = False
        self.size = sum(len(e.raw) for e in envelopes)
        self.patients = set()
        for e in envelopes:
            if e.lane is not Lane.BATCH:
                self.urgent = True
                self.critical = self.critical or e.lane is Lane.CRITICAL
            if e.patient:
                self.patients.add(e.patient)
            self.patients.update(e.other_patients)

    def sent_by_source(self) -> set[tuple[str, str]]:
        """Its (source, patient) pairs: what fixes its place among the appends queued with it."""
        return {key for e in self.envelopes for key in _keys(e)}


@final
class Framed:
    """A group framed and chained, ready to be written and fsync'd."""

    __slots__ = ("data", "group", "hashes", "offsets", "pending")

    def __init__(
        self,
        group: list[Append],
        *,
        data: bytes,
        offsets: list[int],
        hashes: list[bytes],
        pending: list[Pending],
    ) -> None:
        self.group = group
        self.data = data
        self.offsets = offsets
        self.hashes = hashes
        self.pending = pending


def _keys(envelope: Envelope) -> Iterator[tuple[str, str]]:
    for patient in (envelope.patient, *envelope.other_patients):
        if patient:
            yield envelope.source, patient


def critical_first(group: list[Append]) -> list[list[Append]]:
    """Split out critical appends to be made durable first, in their own write and fsync.

    A critical append moves ahead only if no earlier append in the group
    touches one of its patients: lanes choose what is durable first, but
    never reorder one patient's history (a correction stays after its original).
    """
    if len(group) == 1 or not any(a.critical for a in group):
        return [group]
    first: list[Append] = []
    rest: list[Append] = []
    held: set[str] = set()
    for request in group:
        if request.critical and not (request.patients & held):
            first.append(request)
        else:
            rest.append(request)
            held |= request.patients
    return [part for part in (first, rest) if part]


def answer(group: list[Append], error: BaseException | None) -> None:
    """Wake every append of a group, with its error if it failed."""
    for request in group:
        request.error = error
        request.done.set()
