"""Refused input: never a silent drop. The bytes go to quarantine with their reason (invariant 2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, final

import anyio
import structlog

from engine.core.errors import InputError
from engine.core.outcome import IngestResult, Outcome
from engine.infra.clock import utc_now
from engine.wal import Quarantine

__all__ = ["Refusals"]

_log = structlog.get_logger("vigil.node")
# How old the open items are, for `vigil status`: (label, up to this many seconds old), youngest first.
AGES: Final = (("under_1h", 3600.0), ("1h_to_1d", 86400.0), ("over_1d", float("inf")))


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

    async def open_by_age(self, now: datetime | None = None) -> dict[str, int]:
        """The open items counted by age (`AGES`): what waits for an operator, and since when."""
        now = now or datetime.now(UTC)
        counts = dict.fromkeys((label for label, _ in AGES), 0)
        for item in await anyio.to_thread.run_sync(self.quarantine.summaries):
            if item.open:
                counts[_age_label((now - _moment(item.at)).total_seconds())] += 1
        return counts


def _moment(at: str) -> datetime:
    """When an item was quarantined; one whose time cannot be read counts as old (it is looked at first)."""
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _age_label(seconds: float) -> str:
    return next(label for label, most in AGES if seconds <= most)
