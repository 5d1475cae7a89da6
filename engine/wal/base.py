"""The log's base: where the retained log begins once old segments were released.

By default nothing is ever released (it is a medical record). With
`wal.retention = "release-before-snapshot"`, segments wholly older than the
oldest snapshot still needed can be deleted; the base file then records the
first retained LSN and the chain hash of the record before it, so the chain
still verifies from there. It is written (atomically) before any segment is
deleted: a crash in between leaves segments below the base, which are ignored
and removed at the next open.
"""

from __future__ import annotations

from pathlib import Path
from typing import final

import msgspec

from engine.wal.errors import WALCorruptError
from engine.wal.files import FileLayer
from engine.wal.record import GENESIS_HASH
from engine.wal.small_file import DamagedFileError, SmallFile

__all__ = ["Base", "BaseStore"]


@final
class Base(msgspec.Struct, frozen=True, array_like=True):
    """The first retained LSN and the chain hash of the record just before it."""

    first_lsn: int
    prev_hash: bytes


GENESIS = Base(1, GENESIS_HASH)


@final
class BaseStore:
    """The `base` file of a log directory."""

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._file = SmallFile(directory, "base", files, Base)

    def load(self) -> Base:
        """The base (genesis when the log was never trimmed).

        Raises:
            WALCorruptError: the file exists but is damaged: where the log
                begins is then unknown, and guessing could hide a hole.
        """
        try:
            base = self._file.read()
        except DamagedFileError as exc:
            raise WALCorruptError(f"the base file is damaged ({exc})", "base", 0) from None
        return base if base is not None else GENESIS

    def save(self, base: Base) -> None:
        """Replace the base atomically."""
        self._file.write(base)
