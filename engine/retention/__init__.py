"""Retention: old segments leave the log for a compressed, verifiable archive (node floor)."""

from engine.retention.archive import ArchivedSegment, ArchiveError, ArchiveFolder, ArchiveReport
from engine.retention.archiver import Archiver, RetentionStatus
from engine.retention.history import archived, whole_history
from engine.retention.segment_summary import SegmentDamagedError, SegmentSummary, summarise_segment

__all__ = [
    "ArchiveError",
    "ArchiveFolder",
    "ArchiveReport",
    "ArchivedSegment",
    "Archiver",
    "RetentionStatus",
    "SegmentDamagedError",
    "SegmentSummary",
    "archived",
    "summarise_segment",
    "whole_history",
]
