"""The archive folder: sealed segments, compressed, each with a manifest of its place in the chain.

`<first LSN>.seg.gz` holds the segment's bytes exactly as the log had them;
`<first LSN>.seg.json` says its LSN range, the SHA-256 of those bytes, the
chain hash before its first record and after its last, its oldest and newest
record times, and when it was archived. The manifest is written last (both
atomically, fsync'd): a segment is archived once its manifest exists, and a
compressed file without one (a crash between the two) is written again.

`verify` proves the archive as the log's scan proves the log: every CRC,
every LSN in sequence, the chain from the genesis (or the first archived
segment's own anchor) through every archived segment, and on to the log's
base when the log is given.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import final

import msgspec

from engine.retention.segment_summary import SegmentDamagedError, SegmentSummary, summarise_segment
from engine.wal import GENESIS_HASH, FileLayer, OSFiles, segment_name, write_atomic

__all__ = ["ArchiveError", "ArchiveFolder", "ArchiveReport", "ArchivedSegment"]

_GZ, _MANIFEST = ".gz", ".json"
_COMPRESSION = 6  # gzip's default: a segment of 64 MB in about a second, to about a fifth


class ArchiveError(Exception):
    """The archive does not prove what it holds (which segment, and what is wrong, in the message)."""


@final
class ArchivedSegment(msgspec.Struct, frozen=True):
    """One archived segment's manifest."""

    segment: str
    first_lsn: int
    last_lsn: int
    size: int
    sha256: str
    prev_hash: str  # hex: the chain hash of the record before its first
    last_hash: str  # hex: the chain hash of its last record
    oldest: str
    newest: str
    archived_at: str


@final
class ArchiveReport(msgspec.Struct, frozen=True):
    """What `verify` proved: the segments and LSNs the archive holds, its last chain hash, the watched hashes."""

    segments: int
    first_lsn: int
    last_lsn: int
    last_hash: str
    hashes: dict[int, bytes] = {}


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ArchivedSegment).decode


@final
class ArchiveFolder:
    """Archived segments in one folder (made on first use, private)."""

    def __init__(self, path: Path, files: FileLayer | None = None) -> None:
        self.path = path
        self._files = files if files is not None else OSFiles()

    def put(self, data: bytes, summary: SegmentSummary, archived_at: str) -> ArchivedSegment:
        """Archive one segment's bytes (already read and summarised); return its manifest."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = segment_name(summary.first_lsn)
        entry = ArchivedSegment(
            name,
            summary.first_lsn,
            summary.last_lsn,
            len(data),
            hashlib.sha256(data).hexdigest(),
            summary.prev_hash.hex(),
            summary.last_hash.hex(),
            summary.oldest,
            max(summary.newest.values()),
            archived_at,
        )
        write_atomic(self._files, self.path / (name + _GZ), gzip.compress(data, _COMPRESSION, mtime=0))
        write_atomic(self._files, self.path / (name + _MANIFEST), _encode(entry))
        return entry

    def entries(self) -> list[ArchivedSegment]:
        """Every archived segment's manifest, in LSN order.

        Raises:
            ArchiveError: a manifest does not decode.
        """
        if not self.path.is_dir():
            return []
        found = []
        for name in sorted(n for n in self._files.list(self.path) if n.endswith(_MANIFEST)):
            try:
                found.append(_decode(self._files.read(self.path / name)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ArchiveError(f"{name}: the manifest does not decode ({exc})") from None
        return sorted(found, key=lambda e: e.first_lsn)

    def read(self, entry: ArchivedSegment) -> bytes:
        """An archived segment's bytes, checked against its manifest.

        Raises:
            ArchiveError: the file is missing, does not decompress, or is not what the manifest says.
        """
        path = self.path / (entry.segment + _GZ)
        try:
            data = gzip.decompress(self._files.read(path))
        except FileNotFoundError:
            raise ArchiveError(f"{entry.segment}: its compressed file is missing") from None
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise ArchiveError(f"{entry.segment}: does not decompress ({exc})") from None
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ArchiveError(f"{entry.segment}: its bytes are not those the manifest names (SHA-256)")
        return data

    def segments(self) -> Iterator[tuple[ArchivedSegment, bytes]]:
        """Each archived segment with its checked bytes, in LSN order."""
        for entry in self.entries():
            yield entry, self.read(entry)

    def verify(self, log_base: tuple[int, bytes] | None = None, watch: frozenset[int] = frozenset()) -> ArchiveReport:
        """Prove every archived segment and the chain through them (and on to the log's base, if given).

        `log_base` is the log's (first LSN, chain hash before it): the archive
        must end exactly there. The chain hashes at `watch`'s LSNs are
        reported (for the keyed checkpoints).

        Raises:
            ArchiveError: what does not hold, naming the segment.
        """
        entries = self.entries()
        if not entries:
            if log_base is not None and log_base[0] != 1:
                raise ArchiveError(f"the log begins at LSN {log_base[0]} but the archive holds nothing")
            return ArchiveReport(0, 0, 0, GENESIS_HASH.hex())
        lsn, chain, hashes = entries[0].first_lsn, bytes.fromhex(entries[0].prev_hash), dict[int, bytes]()
        if lsn == 1 and chain != GENESIS_HASH:
            raise ArchiveError(f"{entries[0].segment}: the first record does not start the chain")
        for entry in entries:
            if entry.first_lsn != lsn:
                raise ArchiveError(f"{entry.segment}: LSN {lsn} was due next (a segment is missing)")
            try:
                summary = summarise_segment(self.read(entry), entry.first_lsn, chain, watch)
            except SegmentDamagedError as exc:
                raise ArchiveError(f"{entry.segment}: {exc}") from None
            if summary.last_lsn != entry.last_lsn or summary.last_hash.hex() != entry.last_hash:
                raise ArchiveError(f"{entry.segment}: its records are not those the manifest names")
            lsn, chain = summary.last_lsn + 1, summary.last_hash
            hashes.update(summary.hashes)
        if log_base is not None and (log_base[0], log_base[1]) != (lsn, chain):
            raise ArchiveError(
                f"the archive ends before LSN {lsn} but the log begins at LSN {log_base[0]}"
                if log_base[0] != lsn
                else f"the log's base does not chain to the archive's last record (LSN {lsn - 1})"
            )
        return ArchiveReport(len(entries), entries[0].first_lsn, lsn - 1, chain.hex(), hashes)

    def last(self) -> ArchivedSegment | None:
        """The newest archived segment's manifest, if any."""
        entries = self.entries()
        return entries[-1] if entries else None
