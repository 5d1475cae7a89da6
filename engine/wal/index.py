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

from engine.wal.files import FileLayer
from engine.wal.small_file import DamagedFileError, SmallFile

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
