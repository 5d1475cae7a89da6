"""When a sealed segment may leave the log (pure): its lanes' periods, the readers, the snapshots.

A segment goes only when all three allow it, and the first segment that may
not go stops the pass: the log stays one unbroken run from its base.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from engine.infra.config import RetentionConfig
from engine.retention.segment_summary import SegmentSummary

__all__ = ["held_by_reader", "kept_by_age", "snapshots_missing"]


def kept_by_age(summary: SegmentSummary, config: RetentionConfig, now: datetime) -> str | None:
    """Why the segment's age keeps it (None: every record in it is past its lane's period)."""
    for lane, newest in sorted(summary.newest.items()):
        days = config.keep_days(lane)
        if days == 0:
            return f"it holds {lane} records, kept for good ({lane}_days = 0)"
        due = datetime.fromisoformat(newest) + timedelta(days=days)
        if due > now:
            return f"its newest {lane} record is kept until {due.isoformat(timespec='seconds')}"
    return None


def held_by_reader(summary: SegmentSummary, readers: Mapping[str, int]) -> str | None:
    """Why a reader keeps the segment: one still needs an LSN in it or before (None: all are past it).

    `readers` maps each reader to the lowest LSN it may still read (0: it
    cannot say now, a restarting route for one: that holds everything).
    """
    for name, needs in sorted(readers.items()):
        if needs <= summary.last_lsn:
            return f"{name} still needs LSN {needs}" if needs else f"{name} cannot say where it is now"
    return None


def snapshots_missing(summary: SegmentSummary, snapshot_lsn: Mapping[str, int]) -> list[str]:
    """The patients in the segment whose snapshot does not cover their records here.

    Their record could no longer be rebuilt once the segment leaves the log.
    """
    return [p for p, lsn in summary.patients.items() if snapshot_lsn.get(p, 0) < lsn]
