"""The persisted index: the log's in-memory indexes, saved at a clean stop.

Rebuilding the idempotency and patient indexes means decoding every record's
head; for a large log that is most of the start-up time. At a clean stop the
log saves them here, tied to the LSN and chain hash they cover. Recovery then
loads them and scans only what follows, verifying CRCs and the chain from
there. An index that does not load, or does not match the log, is ignored
(with a warning) and everything is scanned: slower, never wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import final

import msgspec
import structlog

from engine.wal.files import FileLayer, write_atomic
from engine.wal.record import frame_body, read_frame

__all__ = ["IndexSnapshot", "IndexStore"]

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

    NAME = "index"

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._path = directory / self.NAME
        self._files = files

    def load(self) -> IndexSnapshot | None:
        """The saved index, or None when absent or damaged."""
        if self.NAME not in self._files.list(self._path.parent):
            return None
        data = self._files.read(self._path)
        frame = read_frame(data, 0)
        if frame is None or not frame.crc_ok:
            _log.warning("wal.index_ignored", reason="checksum mismatch or cut short")
            return None
        try:
            return msgspec.msgpack.decode(frame.body, type=IndexSnapshot)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("wal.index_ignored", reason=str(exc))
            return None

    def save(self, snapshot: IndexSnapshot) -> None:
        """Replace the index atomically."""
        write_atomic(self._files, self._path, frame_body(msgspec.msgpack.encode(snapshot)))

    def remove(self) -> None:
        """Drop the index (it would describe segments that changed)."""
        self._files.remove(self._path)
