"""Reading a log directory from the start: what recovery and `vigil wal verify` share.

The scan checks every frame's CRC, that LSNs follow without a gap, and the
hash chain from a given LSN on (recovery starts the chain at its last
checkpoint; `verify` at the genesis). Damage is one of two things:

- a torn tail: the last segment ends in bytes that are not a whole, valid
  record, no valid record follows them, and they are no longer than the
  largest single write the log makes. Only a crash mid-write leaves that;
  recovery truncates it and says so.
- corruption: anything else (a bad CRC with valid records after it, a broken
  chain, a gap, damage in a sealed segment). The log refuses to open.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import final

import google_crc32c
import msgspec

from engine.wal.base import BaseStore
from engine.wal.errors import WALCorruptError
from engine.wal.files import FileLayer
from engine.wal.record import FRAME, GENESIS_HASH, SEGMENT_MAGIC, RecordHead, body_hash, checksum, decode_head

__all__ = [
    "Progress",
    "Resume",
    "ScanResult",
    "SegmentInfo",
    "TailDamage",
    "Visitor",
    "released_segments",
    "scan_log",
    "segment_name",
]

SEGMENT_SUFFIX = ".seg"
# A LogRecord body is a MessagePack array of 9 elements (8 before the content
# digest was added): it starts with 0x99 (or 0x98).
_BODY_MARK = re.compile(b"[\x98\x99]")

Visitor = Callable[[int, int, RecordHead], None]  # (segment index, frame offset, head)


# Told (bytes done, bytes in all) as a scan goes.
Progress = Callable[[int, int], None]


def segment_name(first_lsn: int) -> str:
    """Segments are named by their first LSN, zero-padded so names sort in log order."""
    return f"{first_lsn:020d}{SEGMENT_SUFFIX}"


@final
class SegmentInfo:
    """One segment file: its LSN range, its valid length, and a sparse LSN index."""

    __slots__ = ("first_lsn", "last_lsn", "name", "path", "size", "sparse")

    def __init__(self, path: Path, first_lsn: int) -> None:
        self.path = path
        self.name = path.name
        self.first_lsn = first_lsn
        self.last_lsn = first_lsn - 1  # empty until a record is added
        self.size = len(SEGMENT_MAGIC)
        self.sparse: list[tuple[int, int]] = []  # (lsn, frame offset) every few records


@final
class TailDamage(msgspec.Struct, frozen=True):
    """Bytes at the end of the last segment that are not a whole valid record."""

    segment: str
    offset: int
    size: int
    reason: str


@final
class ScanResult(msgspec.Struct):
    """What a scan found."""

    segments: list[SegmentInfo]
    records: int
    last_lsn: int
    last_hash: bytes
    hashed_records: int
    tail: TailDamage | None = None
    hashes: dict[int, bytes] = msgspec.field(default_factory=dict)  # hash at each watched LSN
    first_lsn: int = 1  # the first retained LSN (above 1 once old segments were released)


def scan_log(
    directory: Path,
    files: FileLayer,
    *,
    chain_from_lsn: int = 0,
    chain_from_hash: bytes | None = None,
    visit: Visitor | None = None,
    sparse_every: int = 64,
    tail_window_bytes: int = 64 * 1024 * 1024,
    watch: frozenset[int] = frozenset(),
    resume: Resume | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan every segment in order (or, with `resume`, only what follows a persisted index).

    Args:
        chain_from_lsn: verify the hash chain from this LSN on (0: from genesis).
        chain_from_hash: the expected hash of record `chain_from_lsn` (a checkpoint's).
        visit: called for every valid record, to build indexes.
        sparse_every: keep one (LSN, offset) pair per this many records.
        tail_window_bytes: the largest single write; longer damage is corruption.
        watch: LSNs whose body hash to report in `ScanResult.hashes` (hashed LSNs only).
        resume: segments already known (from a persisted index) up to an LSN
            and its hash: scanning starts right after it, and the chain is
            verified from it.
        progress: told (bytes done, bytes in all) after each segment, so a
            long recovery or verification can show how far it is.

    Raises:
        WALCorruptError: damage that is not a torn tail.
    """
    base = BaseStore(directory, files).load()
    names = [n for n in files.list(directory) if n.endswith(SEGMENT_SUFFIX)]
    names = [n for n in names if not _released(n, base.first_lsn)]
    result = ScanResult([], 0, base.first_lsn - 1, GENESIS_HASH, 0, first_lsn=base.first_lsn)
    state = _Chain(chain_from_lsn, chain_from_hash, watch, result.hashes)
    state.last_hash = base.prev_hash
    total = sum(files.size(directory / n) for n in names) if progress is not None else 0
    done = 0
    start_index = 0
    if resume is not None:
        start_index = _resume(resume, names, result, state)
        for seg in result.segments[:-1]:
            _check_crcs(files.read(seg.path), seg, seg.size)
            done += seg.size
    for index in range(start_index, len(names)):
        name = names[index]
        last = index == len(names) - 1
        if resume is not None and index == start_index and result.segments:
            seg = result.segments[-1]  # the last indexed segment: go on from its end
        else:
            seg = _open_segment(directory / name, result.last_lsn + 1)
            result.segments.append(seg)
        data = files.read(seg.path)
        if resume is not None and index == start_index and seg.last_lsn >= seg.first_lsn:
            _check_crcs(data, seg, seg.size)
        if not data.startswith(SEGMENT_MAGIC):
            if last and SEGMENT_MAGIC.startswith(data):
                # Created, then the process died before the header was on disk.
                result.tail = TailDamage(name, 0, len(data), "segment header incomplete")
                seg.size = 0
                break
            raise WALCorruptError("not a Vigil log segment (bad header)", name, 0)
        result.tail = _scan_segment(
            data,
            seg,
            index,
            start=seg.size if seg.last_lsn >= seg.first_lsn else len(SEGMENT_MAGIC),
            last=last,
            chain=state,
            result=result,
            visit=visit,
            sparse_every=sparse_every,
            window=tail_window_bytes,
        )
        if progress is not None:
            done += len(data)
            progress(done, max(total, done))
    if chain_from_lsn and result.last_lsn < chain_from_lsn:
        where = result.segments[-1].name if result.segments else "(no segment)"
        raise WALCorruptError(f"checkpoint at LSN {chain_from_lsn} but the log ends at LSN {result.last_lsn}", where, 0)
    result.last_hash = state.last_hash
    result.hashed_records = state.hashed
    return result


@final
class Resume(msgspec.Struct, frozen=True):
    """Where a persisted index leaves off: its segments, last LSN and that record's hash."""

    segments: list[SegmentInfo]
    lsn: int
    hash: bytes


def _resume(resume: Resume, names: list[str], result: ScanResult, chain: _Chain) -> int:
    """Take the indexed segments as known; return the index of the segment to scan from."""
    known = [s.name for s in resume.segments]
    if names[: len(known)] != known:
        where = known[0] if known else "(no segment)"
        raise WALCorruptError("segments named in the index are missing", where, 0)
    result.segments = list(resume.segments)
    result.records = resume.lsn - result.last_lsn
    result.last_lsn = resume.lsn
    chain.last_hash = resume.hash
    chain.from_lsn = resume.lsn + 1
    chain.expected_hash = None
    return max(len(known) - 1, 0)


def _check_crcs(data: bytes, seg: SegmentInfo, end: int) -> None:
    """Check every frame's CRC up to `end` without decoding: what an indexed prefix still gets.

    Hardware CRC32C over the bytes is a fraction of the cost of decoding, and
    it keeps the promise that damage anywhere refuses the log at open.
    """
    if len(data) < end or not data.startswith(SEGMENT_MAGIC):
        raise WALCorruptError(f"segment is shorter than the index says ({end} bytes)", seg.name, len(data))
    unpack = FRAME.unpack_from
    crc_of, crc_more = google_crc32c.value, google_crc32c.extend
    pos, count = len(SEGMENT_MAGIC), 0
    while pos < end:
        length, crc = unpack(data, pos)
        stop = pos + 8 + length
        if stop > end or crc_more(crc_of(data[pos : pos + 4]), data[pos + 8 : stop]) != crc:
            raise WALCorruptError("CRC mismatch in a sealed part of the log", seg.name, pos)
        pos, count = stop, count + 1
    if count != seg.last_lsn - seg.first_lsn + 1:
        raise WALCorruptError(f"{count} records where the index has {seg.last_lsn - seg.first_lsn + 1}", seg.name, pos)


def _released(name: str, first_lsn: int) -> bool:
    """A segment wholly below the base: left by a release interrupted by a crash."""
    stem = name.removesuffix(SEGMENT_SUFFIX)
    return stem.isdigit() and int(stem) < first_lsn


def released_segments(directory: Path, files: FileLayer) -> list[str]:
    """Segments below the base, to be deleted (an interrupted release)."""
    first = BaseStore(directory, files).load().first_lsn
    return [n for n in files.list(directory) if n.endswith(SEGMENT_SUFFIX) and _released(n, first)]


def _open_segment(path: Path, expected_first: int) -> SegmentInfo:
    stem = path.name.removesuffix(SEGMENT_SUFFIX)
    if not stem.isdigit() or int(stem) != expected_first:
        raise WALCorruptError(f"segment should start at LSN {expected_first} (a segment is missing)", path.name, 0)
    return SegmentInfo(path, expected_first)


@final
class _Chain:
    """The running hash-chain check."""

    __slots__ = ("expected_hash", "found", "from_lsn", "hashed", "last_hash", "watch")

    def __init__(
        self, from_lsn: int, expected_hash: bytes | None, watch: frozenset[int], found: dict[int, bytes]
    ) -> None:
        self.from_lsn = from_lsn
        self.expected_hash = expected_hash
        self.last_hash = GENESIS_HASH
        self.hashed = 0
        self.watch = watch
        self.found = found


def _scan_segment(
    data: bytes,
    seg: SegmentInfo,
    index: int,
    *,
    start: int,
    last: bool,
    chain: _Chain,
    result: ScanResult,
    visit: Visitor | None,
    sparse_every: int,
    window: int,
) -> TailDamage | None:
    # The hot loop of recovery: names are bound to locals and helpers inlined,
    # because every call per record costs measurably at a million records.
    n = len(data)
    pos = start
    if n < start:
        raise WALCorruptError(f"segment is shorter ({n} bytes) than the index says ({start})", seg.name, n)
    expected = result.last_lsn + 1
    unpack = FRAME.unpack_from
    crc_of, crc_more = google_crc32c.value, google_crc32c.extend
    decode = decode_head
    chain_from = chain.from_lsn
    # The next LSN to put in the sparse index (every `sparse_every` from the segment's first).
    sparse_next = expected + (seg.first_lsn - expected) % sparse_every
    damage: TailDamage | None = None
    while pos < n:
        if pos + 8 > n:
            damage = _damage(data, seg, pos, last=last, window=window, reason="record header cut short")
            break
        length, crc = unpack(data, pos)
        end = pos + 8 + length
        if end > n:
            damage = _damage(data, seg, pos, last=last, window=window, reason="record cut short")
            break
        body = data[pos + 8 : end]
        if crc_more(crc_of(data[pos : pos + 4]), body) != crc:
            damage = _damage(data, seg, pos, last=last, window=window, reason="CRC mismatch")
            break
        try:
            head = decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise WALCorruptError("record body does not decode (CRC valid)", seg.name, pos) from None
        if head.lsn != expected:
            raise WALCorruptError(f"LSN {head.lsn} where {expected} was due (a gap)", seg.name, pos)
        if expected >= chain_from:
            _check_chain(chain, head, body, seg.name, pos)
        if visit is not None:
            visit(index, pos, head)
        if expected == sparse_next:
            seg.sparse.append((expected, pos))
            sparse_next += sparse_every
        expected += 1
        pos = end
    seg.size = pos
    seg.last_lsn = expected - 1
    result.records += expected - 1 - result.last_lsn
    result.last_lsn = expected - 1
    return damage


def _check_chain(chain: _Chain, head: RecordHead, body: bytes, segment: str, pos: int) -> None:
    digest = body_hash(body)
    if head.lsn == chain.from_lsn and chain.expected_hash is not None:
        # The checkpointed record: its hash was vouched for when it was durable.
        if digest != chain.expected_hash:
            raise WALCorruptError(f"record {head.lsn} does not match the checkpoint's hash", segment, pos)
    elif head.prev_hash != chain.last_hash:
        raise WALCorruptError(f"hash chain broken at LSN {head.lsn} (a record was edited or removed)", segment, pos)
    chain.last_hash = digest
    chain.hashed += 1
    if head.lsn in chain.watch:
        chain.found[head.lsn] = digest


def _damage(data: bytes, seg: SegmentInfo, pos: int, *, last: bool, window: int, reason: str) -> TailDamage:
    remaining = len(data) - pos
    if not last:
        raise WALCorruptError(f"{reason} in a sealed segment", seg.name, pos)
    if remaining > window:
        raise WALCorruptError(f"{reason}, {remaining} bytes before the end (more than one write)", seg.name, pos)
    if _valid_frame_after(data, pos):
        raise WALCorruptError(f"{reason}, and valid records follow", seg.name, pos)
    return TailDamage(seg.name, pos, remaining, reason)


def _valid_frame_after(data: bytes, pos: int) -> bool:
    """Is there any whole, CRC-valid record after `pos`? (Jumps between body marks.)"""
    buf = data
    start = pos + 1 + FRAME.size
    while True:
        found = _BODY_MARK.search(data, start)
        if found is None:
            return False
        mark = found.start()
        frame_at = mark - FRAME.size
        length, crc = FRAME.unpack_from(buf, frame_at)
        end = mark + length
        if length > 0 and end <= len(data) and checksum(buf[frame_at : frame_at + 4], buf[mark:end]) == crc:
            return True
        start = mark + 1
