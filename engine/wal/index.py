"""The log's indexes: message id -> LSN, patient -> record positions, segments.

`LogIndex` is what the log keeps in memory: the idempotency index, the
patient index (each entry packs a segment ordinal and a byte offset), and the
segments with their sparse LSN indexes. It is built by recovery's scan,
extended after every durable group, and, at a clean stop, saved.

Rebuilding the idempotency and patient indexes means decoding every record's
head; for a large log that is most of the start-up time. At a clean stop the
log saves them here, tied to the LSN and chain hash they cover. Recovery then
loads them and scans only what follows, verifying CRCs and the chain from
there. An index that does not load, or does not match the log, is ignored
(with a warning) and everything is scanned: slower, never wrong.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import final

import msgspec
import structlog

from engine.wal.files import FileLayer
from engine.wal.record import SEGMENT_MAGIC, RecordHead
from engine.wal.scan import Resume, SegmentInfo
from engine.wal.small_file import DamagedFileError, SmallFile

__all__ = ["IndexSnapshot", "IndexStore", "LogIndex"]

_SEGMENT_BITS = 40  # a patient index entry packs (segment ordinal << 40 | offset)
_OFFSET_MASK = (1 << _SEGMENT_BITS) - 1

_log = structlog.get_logger("vigil.wal")


@final
class IndexSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """The indexes as of `lsn` (whose chain hash is `hash`).

    `segments` holds (name, first LSN, last LSN, valid size, sparse index);
    `patients` maps each key to its packed positions (`array('q')` bytes).
    """

    lsn: int
    hash: bytes
    segments: list[tuple[str, int, int, int, list[tuple[int, int]]]]
    ids: dict[str, int]
    patients: dict[str, bytes]


@final
class IndexStore:
    """The `index` file of a log directory."""

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._file = SmallFile(directory, "index", files, IndexSnapshot)

    def load(self) -> IndexSnapshot | None:
        """The saved index, or None when absent or damaged (a damaged one is only slower)."""
        try:
            return self._file.read()
        except DamagedFileError as exc:
            _log.warning("wal.index_ignored", reason=str(exc))
            return None

    def save(self, snapshot: IndexSnapshot) -> None:
        """Replace the index atomically."""
        self._file.write(snapshot)

    def remove(self) -> None:
        """Drop the index (it describes one moment only)."""
        self._file.remove()


@final
class LogIndex:
    """The log's in-memory indexes."""

    def __init__(self, sparse_every: int) -> None:
        self.sparse_every = sparse_every
        self.segments: list[SegmentInfo] = []
        self._firsts: list[int] = []  # first LSN of each segment, for bisect
        self._ids: dict[str, int] = {}
        self._patients: dict[str, array[int]] = {}
        # Segments released since open: entries count segments from the first
        # one of this run, so ordinals are offset by this.
        self._released = 0

    # -- building ---------------------------------------------------------------

    def visit(self, segment: int, offset: int, head: RecordHead) -> None:
        """The recovery scan's visitor (the body of `add`, inlined: one call less a record)."""
        self._ids[head.message_id] = head.lsn
        entry = segment << _SEGMENT_BITS | offset
        for key in head.patients:
            positions = self._patients.get(key)
            if positions is None:
                self._patients[key] = positions = array("q")
            positions.append(entry)

    def add(self, offset: int, lsn: int, message_id: str, patients: tuple[str, ...]) -> None:
        """Index a record just made durable in the last segment."""
        seg = self.segments[-1]
        self._ids[message_id] = lsn
        entry = (len(self.segments) - 1 + self._released) << _SEGMENT_BITS | offset
        for key in patients:
            positions = self._patients.get(key)
            if positions is None:
                self._patients[key] = positions = array("q")
            positions.append(entry)
        if (lsn - seg.first_lsn) % self.sparse_every == 0:
            seg.sparse.append((lsn, offset))

    def adopt(self, segments: list[SegmentInfo]) -> None:
        """Take the segments recovery found."""
        self.segments = segments
        self._firsts = [s.first_lsn for s in segments]

    def add_segment(self, seg: SegmentInfo) -> None:
        """A new segment begun at the end."""
        self.segments.append(seg)
        self._firsts.append(seg.first_lsn)

    def release(self, count: int) -> list[SegmentInfo]:
        """Forget the first `count` segments; return them."""
        doomed = self.segments[:count]
        del self.segments[:count]
        del self._firsts[:count]
        self._released += count
        return doomed

    # -- reading ------------------------------------------------------------------

    def lookup(self, message_id: str) -> int | None:
        """The LSN of a message id, if indexed."""
        return self._ids.get(message_id)

    def segments_from(self, lsn: int) -> list[SegmentInfo]:
        """The segments holding `lsn` and after."""
        index = max(bisect.bisect_right(self._firsts, lsn) - 1, 0)
        return self.segments[index:]

    def patient_positions(self, patient: str) -> Iterator[tuple[SegmentInfo, int]]:
        """(segment, frame offset) of every retained record touching a patient, in order."""
        for entry in list(self._patients.get(patient, ())):
            ordinal = (entry >> _SEGMENT_BITS) - self._released
            if ordinal >= 0:  # else in a released segment
                yield self.segments[ordinal], entry & _OFFSET_MASK

    # -- persistence ----------------------------------------------------------------

    def snapshot(self, lsn: int, digest: bytes) -> IndexSnapshot | None:
        """The indexes as a value to save; None after a release this run (ordinals moved)."""
        if self._released:
            return None
        return IndexSnapshot(
            lsn,
            digest,
            [(s.name, s.first_lsn, s.last_lsn, s.size, s.sparse) for s in self.segments],
            self._ids,
            {key: positions.tobytes() for key, positions in self._patients.items()},
        )

    def restore(self, directory: Path, saved: IndexSnapshot) -> Resume:
        """Load saved indexes; return where the recovery scan resumes."""
        segments = []
        for name, first, last, size, sparse in saved.segments:
            seg = SegmentInfo(directory / name, first)
            seg.last_lsn, seg.size = last, size
            seg.sparse = [(lsn, offset) for lsn, offset in sparse]
            segments.append(seg)
        self._ids = dict(saved.ids)
        self._patients = {key: array("q", packed) for key, packed in saved.patients.items()}
        return Resume(segments, saved.lsn, saved.hash)


def sparse_offset(seg: SegmentInfo, lsn: int) -> int:
    """The offset of the last sparse entry at or before `lsn` (the segment start if none)."""
    i = bisect.bisect_right(seg.sparse, (lsn, 1 << 62)) - 1
    return seg.sparse[i][1] if i >= 0 else len(SEGMENT_MAGIC)
