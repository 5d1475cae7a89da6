"""Refused input: never a silent drop. The bytes go to quarantine with their reason (invariant 2)."""

from __future__ import annotations

from typing import final

import anyio
import structlog

from engine.core.errors import InputError
from engine.core.outcome import IngestResult, Outcome
from engine.infra.clock import utc_now
from engine.wal import Quarantine

__all__ = ["Refusals"]

_log = structlog.get_logger("vigil.node")


@final
class Refusals:
    """Keeps each refused input whole in quarantine and gives the answer its source gets."""

    def __init__(self, quarantine: Quarantine) -> None:
        self.quarantine = quarantine

    async def reject(self, raw: bytes, source: str, error: InputError) -> IngestResult:
        """The input into quarantine, with the reason; a rejected result naming the quarantine item."""
        qid = await anyio.to_thread.run_sync(
            lambda: self.quarantine.add(raw, source=source, reason=error.reason, error=error.to_dict(), at=utc_now())
        )
        _log.info("node.rejected", source=source, quarantine_id=qid, reason=error.reason)
        return IngestResult(Outcome.REJECTED, error={**error.to_dict(), "quarantine_id": qid})

    async def open_items(self) -> int:
        """How many quarantined inputs wait for an operator."""
        return await anyio.to_thread.run_sync(lambda: sum(1 for q in self.quarantine.items() if q.open))
