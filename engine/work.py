"""Messages on their way through a lane: what a lane carries, and the answer a source waits for."""

from __future__ import annotations

from typing import final

import anyio
import msgspec

from engine.errors import InputError
from engine.hl7 import Outcome
from engine.model import Envelope, Kind
from lanes.classify import Classification

__all__ = ["Group", "IngestResult", "TemporaryError", "Work", "patient_hint", "timed_out"]


@final
class IngestResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """What became of one message: accepted (with LSN), retry, or rejected (with the error)."""

    outcome: str
    lsns: tuple[int, ...] = ()
    duplicate: bool = False
    error: dict[str, object] | None = None


@final
class Work:
    """One message on its way through a lane, and the answer its source waits for."""

    __slots__ = (
        "answered",
        "classified",
        "in_batch",
        "kind",
        "message_type",
        "outcome",
        "parsed",
        "raw",
        "reason",
        "result",
        "source",
    )

    def __init__(
        self,
        raw: bytes,
        source: str,
        kind: Kind,
        *,
        in_batch: bool = False,
        classified: Classification | None = None,
        parsed: Envelope | InputError | None = None,
    ) -> None:
        self.raw = raw
        self.classified = classified  # the lane decided at the source: not decided twice
        self.parsed = parsed  # parsed already (in a worker process), or refused there
        self.source = source
        self.kind = kind
        self.in_batch = in_batch
        self.answered = False
        self.outcome = Outcome.RETRY
        self.reason: InputError | None = None
        self.result = IngestResult("retry")
        self.message_type = ""

    def finish(self, outcome: Outcome, result: IngestResult, reason: InputError | None = None) -> None:
        self.outcome, self.result, self.reason = outcome, result, reason
        self.answered = True


@final
class Group:
    """Messages handled in one turn of a lane and one log append: one message, or a stream's (`engine.batching`)."""

    __slots__ = ("done", "works")

    def __init__(self, works: list[Work], done: anyio.Event | None = None) -> None:
        self.works = works
        self.done = done if done is not None else anyio.Event()


class TemporaryError(InputError):
    """Not the message's fault: the node cannot take it now (disk full, log stopped, timeout)."""


def timed_out() -> tuple[IngestResult, TemporaryError]:
    """The answer to a message not durable in time: it may still become so, and a retry is then a duplicate (AA)."""
    reason = TemporaryError("timed out waiting for the log; retry later")
    return IngestResult("retry", error=reason.to_dict()), reason


def patient_hint(raw: bytes) -> bytes | None:
    """PID-3 as sent, from the raw bytes: enough to keep one patient's messages in order."""
    for marker in (b"\rPID", b"\nPID"):
        start = raw.find(marker)
        if start >= 0:
            line = raw[start + 1 :].split(b"\r", 1)[0].split(b"\n", 1)[0]
            fields = line.split(line[3:4]) if len(line) > 3 else []
            return fields[3] if len(fields) > 3 and fields[3] else None
    return None
