"""The log's indexes: message id and digest -> LSN, patient -> record positions, segments.

`LogIndex` is what the log keeps in memory: the idempotency index (a message
is a duplicate when its id *and* its content digest match a record's; see
`engine.core.identity`), the
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
# An id entry packs (LSN << 64 | digest): one int per message, no second dict.
# The first content seen under an id is keyed by the id itself; every other
# content under that id (a reused control id) by `id#digest`, so a resend of
# any of them is still recognised.
_DIGEST_BITS = 64
_DIGEST_MASK = (1 << _DIGEST_BITS) - 1

_log = structlog.get_logger("vigil.wal")


@final
class IndexSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """The indexes as of `lsn` (whose chain hash is `hash`).

    `segments` holds (name, first LSN, last LSN, valid size, sparse index);
    `ids` maps each id key to its LSN and `digests` holds their digests in the
    same order (MessagePack has no 128-bit integers for the packed entry);
    `patients` maps each key to its packed positions (`array('q')` bytes).
    """

    lsn: int
    hash: bytes
    segments: list[tuple[str, int, int, int, list[tuple[int, int]]]]
    ids: dict[str, int]
    digests: list[int]
    patients: dict[str, bytes]


@final
class IndexStore:
    """The `index` file of a log directory."""

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._file = SmallFile(directory, "index", files, IndexSnapshot)

    def load(self) -> IndexSnapshot | None:
        """The saved index, or None when absent or damaged (a damaged one is only slower)."""
        try:
            saved = self._file.read()
        except DamagedFileError as exc:
            _log.warning("wal.index_ignored", reason=str(exc))
            return None
        if saved is not None and len(saved.digests) != len(saved.ids):
            _log.warning("wal.index_ignored", reason="its ids and digests differ in number")
            return None
        return saved

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
        self._remember(head.message_id, head.digest, head.lsn)
        entry = segment << _SEGMENT_BITS | offset
        for key in head.patients:
            positions = self._patients.get(key)
            if positions is None:
                self._patients[key] = positions = array("q")
            positions.append(entry)

    def add(self, offset: int, lsn: int, message_id: str, digest: int, patients: tuple[str, ...]) -> None:
        """Index a record just made durable in the last segment."""
        seg = self.segments[-1]
        self._remember(message_id, digest, lsn)
        entry = (len(self.segments) - 1 + self._released) << _SEGMENT_BITS | offset
        for key in patients:
            positions = self._patients.get(key)
            if positions is None:
                self._patients[key] = positions = array("q")
            positions.append(entry)
        if (lsn - seg.first_lsn) % self.sparse_every == 0:
            seg.sparse.append((lsn, offset))

    def _remember(self, message_id: str, digest: int, lsn: int) -> None:
        ids = self._ids
        known = ids.get(message_id)
        if known is not None and known & _DIGEST_MASK != digest:
            message_id = _variant(message_id, digest)
        ids[message_id] = lsn << _DIGEST_BITS | digest

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

    def lookup(self, message_id: str, digest: int = 0) -> int | None:
        """The LSN of the record with this id and content, if indexed.

        A digest of 0 on either side ("unknown": a caller without content, a
        record from before digests) matches on the id alone, as before.
        """
        known = self._ids.get(message_id)
        if known is None:
            return None
        stored = known & _DIGEST_MASK
        if stored != digest and stored and digest:
            known = self._ids.get(_variant(message_id, digest))
            if known is None:
                return None
        return known >> _DIGEST_BITS

    def holds_id(self, message_id: str) -> bool:
        """Whether any record carries this id (whatever its content)."""
        return message_id in self._ids

    def segments_from(self, lsn: int) -> list[SegmentInfo]:
        """The segments holding `lsn` and after."""
        index = max(bisect.bisect_right(self._firsts, lsn) - 1, 0)
        return self.segments[index:]

    def patient_record_count(self, patient: str) -> int:
        """How many records touch a patient (released ones included: an upper bound of what is read)."""
        return len(self._patients.get(patient, ()))

    def patient_positions(self, patient: str, *, newest_first: bool = False) -> Iterator[tuple[SegmentInfo, int]]:
        """(segment, frame offset) of every retained record touching a patient, in order (or newest first)."""
        entries = list(self._patients.get(patient, ()))
        for entry in reversed(entries) if newest_first else entries:
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
            {key: packed >> _DIGEST_BITS for key, packed in self._ids.items()},
            [packed & _DIGEST_MASK for packed in self._ids.values()],
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
        pairs = zip(saved.ids.items(), saved.digests, strict=True)
        self._ids = {key: lsn << _DIGEST_BITS | digest for (key, lsn), digest in pairs}
        self._patients = {key: array("q", packed) for key, packed in saved.patients.items()}
        return Resume(segments, saved.lsn, saved.hash)


def _variant(message_id: str, digest: int) -> str:
    """The index key of a further content under an id already taken."""
    return f"{message_id}#{digest:016x}"


def sparse_offset(seg: SegmentInfo, lsn: int) -> int:
    """The offset of the last sparse entry at or before `lsn` (the segment start if none)."""
    i = bisect.bisect_right(seg.sparse, (lsn, 1 << 62)) - 1
    return seg.sparse[i][1] if i >= 0 else len(SEGMENT_MAGIC)
