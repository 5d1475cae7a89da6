"""What a lane carries: messages on their way through it (`Work`, a `Group`), and the answer a source waits for."""

from __future__ import annotations

from typing import final

import anyio

from engine.core.errors import InputError, MessageError, TemporaryError
from engine.core.model import Envelope, Kind
from engine.core.outcome import IngestResult, Outcome
from lanes import Classification

__all__ = ["Group", "Work", "timed_out"]


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
        "trace",
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
        self.trace = ""  # the traceparent of the span that received it, when tracing is on
        self.source = source
        self.kind = kind
        self.in_batch = in_batch
        self.answered = False
        self.outcome = Outcome.RETRY
        self.reason: MessageError | None = None
        self.result = IngestResult(Outcome.RETRY)
        self.message_type = ""

    def finish(self, outcome: Outcome, result: IngestResult, reason: MessageError | None = None) -> None:
        self.outcome, self.result, self.reason = outcome, result, reason
        self.answered = True


@final
class Group:
    """Messages handled in one turn of a lane and one log append: one message, or a stream's (`engine.core.windows`)."""

    __slots__ = ("done", "works")

    def __init__(self, works: list[Work], done: anyio.Event | None = None) -> None:
        self.works = works
        self.done = done if done is not None else anyio.Event()


def timed_out() -> tuple[IngestResult, TemporaryError]:
    """The answer to a message not durable in time: it may still become so, and a retry is then a duplicate (AA)."""
    reason = TemporaryError("timed out waiting for the log; retry later")
    return IngestResult(Outcome.RETRY, error=reason.to_dict()), reason
