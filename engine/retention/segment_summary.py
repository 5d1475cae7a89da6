"""What retention needs to know of a sealed segment, read from its bytes (pure: no I/O).

The same reading checks an archived segment: every frame's CRC, LSNs in
sequence from the segment's first, and the hash chain from the hash of the
record before it. A segment that fails any of those is never archived.
"""

from __future__ import annotations

from typing import final

import msgspec

from engine.wal import SEGMENT_MAGIC, body_hash, decode_lane, read_frame

__all__ = ["SegmentDamagedError", "SegmentSummary", "summarise_segment"]


class SegmentDamagedError(Exception):
    """A segment's bytes are not a whole, chained run of records (what and where is in the message)."""


@final
class SegmentSummary(msgspec.Struct, frozen=True):
    """A segment's LSN range, its place in the chain, how new its records are per lane, its patients.

    `newest` maps a lane to the latest `recorded_at` of its records here;
    `patients` maps each patient key to the last LSN here that touches it.
    """

    first_lsn: int
    last_lsn: int
    prev_hash: bytes
    last_hash: bytes
    oldest: str
    newest: dict[str, str]
    patients: dict[str, int]
    hashes: dict[int, bytes] = {}  # the chain hash at each watched LSN here

    @property
    def records(self) -> int:
        return self.last_lsn - self.first_lsn + 1


def summarise_segment(
    data: bytes, first_lsn: int, prev_hash: bytes | None = None, watch: frozenset[int] = frozenset()
) -> SegmentSummary:
    """Read a whole sealed segment; with `prev_hash`, its first record must chain to it.

    `watch`: LSNs whose chain hash to keep (the keyed checkpoints' records).

    Raises:
        SegmentDamagedError: a bad header, a torn or CRC-failing frame, an LSN out
            of sequence, a broken chain, or no record at all.
    """
    if not data.startswith(SEGMENT_MAGIC):
        raise SegmentDamagedError("not a segment (its header is missing)")
    pos, lsn, running = len(SEGMENT_MAGIC), first_lsn, prev_hash
    first_prev = last_hash = b""
    oldest, newest, patients, hashes = "", dict[str, str](), dict[str, int](), dict[int, bytes]()
    while pos < len(data):
        frame = read_frame(data, pos)
        if frame is None:
            raise SegmentDamagedError(f"a record cut short at byte {pos}")
        if not frame.crc_ok:
            raise SegmentDamagedError(f"CRC mismatch at byte {pos} (LSN {lsn})")
        try:
            head = decode_lane(frame.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise SegmentDamagedError(f"a record at byte {pos} does not decode") from None
        if head.lsn != lsn:
            raise SegmentDamagedError(f"LSN {head.lsn} where {lsn} was due at byte {pos}")
        if running is not None and head.prev_hash != running:
            raise SegmentDamagedError(f"the hash chain breaks at LSN {lsn}")
        if lsn == first_lsn:
            first_prev, oldest = head.prev_hash, head.recorded_at
        running = last_hash = body_hash(frame.body)
        if lsn in watch:
            hashes[lsn] = last_hash
        lane = head.envelope.lane.value
        newest[lane] = max(newest.get(lane, ""), head.recorded_at)
        for patient in head.patients:
            patients[patient] = lsn
        lsn, pos = lsn + 1, frame.end
    if lsn == first_lsn:
        raise SegmentDamagedError("the segment holds no record")
    return SegmentSummary(first_lsn, lsn - 1, first_prev, last_hash, oldest, newest, patients, hashes)
