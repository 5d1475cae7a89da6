"""What an MLLP sender is answered: an HL7 ACK per message it sent, and nothing it did not ask for.

`MLLPAnswers` is handed the node's `ingest` callable (one message in, its
result and refusal out), the node's id (the ACKs' own MSH-10 prefix) and a
clock; the MLLP listener calls `answer_frame` for each frame and
`refuse_framing` for each framing error.

- A message gets `AA`/`CA`, `AE`/`CE` (not durable in time: retry) or
  `AR`/`CR` with an ERR segment, in the mode MSH-15/16 ask for.
- An empty frame, a stray start block, a frame cut short and junk between
  frames hold no message a sender waits on: an AR without a control id would
  be read as the answer to its *next* message, so they are logged with the
  peer and never answered.
- A frame refused as too large is answered `AR`, echoing the MSH-10 read from
  its first bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import final

import structlog

from engine.core.errors import FramingError, MessageError
from engine.core.hl7 import AckContext, build_ack
from engine.core.model import Kind
from engine.core.outcome import IngestResult, Outcome

__all__ = ["IngestOne", "MLLPAnswers"]

_log = structlog.get_logger("vigil.node")
_BLANK = b" \t\r\n"

# One message (bytes, source, kind) -> its result, and the refusal to report (None when accepted).
IngestOne = Callable[[bytes, str, Kind], Awaitable[tuple[IngestResult, MessageError | None]]]


@final
class MLLPAnswers:
    """The ACKs of one node's MLLP listener."""

    def __init__(self, ingest: IngestOne, node_id: str, clock: Callable[[], datetime]) -> None:
        self._ingest = ingest
        self._node_id = node_id
        self._clock = clock
        self._acks = itertools.count(1)
        self._dtm_second: tuple[int, ...] = ()
        self._dtm_text = ""

    async def answer_frame(self, raw: bytes, source: str) -> bytes | None:
        """Ingest one HL7 v2 message and build its ACK; an empty frame gets none."""
        if not raw.strip(_BLANK):
            _log.warning("mllp.empty_frame", source=source, reason="an MLLP frame with no message: not answered")
            return None
        _outcome, ack = await self.acknowledge(raw, source)
        return ack

    async def acknowledge(self, raw: bytes, source: str) -> tuple[Outcome, bytes]:
        """Ingest one HL7 v2 message: what became of it, and its ACK (HL7 v2 over HTTP answers with both)."""
        ctx = AckContext.from_raw(raw)
        result, refusal = await self._ingest(raw, source, Kind.HL7V2)
        ack = build_ack(ctx, result.outcome, control_id=self._ack_id(), timestamp=self._dtm(), error=refusal)
        return result.outcome, ack.to_bytes()

    def refuse_framing(self, error: FramingError, source: str) -> bytes | None:
        """An AR for a frame refused whole (too large), echoing its MSH-10; nothing for broken framing."""
        _log.warning("mllp.framing_error", source=source, reason=error.reason)
        head = error.head.lstrip(_BLANK)
        if head[:3] != b"MSH":
            return None
        ctx = AckContext.from_raw(head)
        return build_ack(
            ctx, Outcome.REJECTED, control_id=self._ack_id(), timestamp=self._dtm(), error=error
        ).to_bytes()

    def _ack_id(self) -> str:
        return f"{self._node_id}-{next(self._acks)}"

    def _dtm(self) -> str:
        """The ACK's MSH-7 (to the second): formatted once a second, not once a message."""
        now = self._clock()
        second = (now.year, now.month, now.day, now.hour, now.minute, now.second)
        if second != self._dtm_second:
            self._dtm_second, self._dtm_text = second, now.strftime("%Y%m%d%H%M%S")
        return self._dtm_text
