"""What became of a message: one vocabulary from the lane worker to every source's answer.

`Outcome` is the three-valued answer; each source spells it its own way at its
edge only (HL7: AA/AE/AR or CA/CE/CR; NATS: ack, nak with delay, term; stdin
and the drop folder: the JSON below). It is a `StrEnum`, so its JSON form is
the plain word ("accepted") and older answers read back unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import final

import msgspec

__all__ = ["IngestResult", "Outcome", "worst"]


class Outcome(enum.StrEnum):
    """What happened to the message, whichever way its source is answered."""

    ACCEPTED = "accepted"  # durable: AA / CA
    RETRY = "retry"  # a temporary failure (disk full, overload): AE / CE
    REJECTED = "rejected"  # can never be accepted as sent: AR / CR


@final
class IngestResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What became of one message: accepted (with LSN), retry, or rejected (with the error)."""

    outcome: Outcome
    lsns: tuple[int, ...] = ()
    duplicate: bool = False
    error: dict[str, object] | None = None


def worst(outcomes: Iterable[Outcome]) -> Outcome:
    """The outcome of several messages sent as one (a NATS message holding a batch): retry before rejected.

    A sender that met a temporary failure for part of it must retry, not give
    up; nothing at all (an empty input) is a retry too, never an acceptance.
    """
    seen = set(outcomes)
    if Outcome.RETRY in seen or not seen:
        return Outcome.RETRY
    return Outcome.REJECTED if Outcome.REJECTED in seen else Outcome.ACCEPTED
