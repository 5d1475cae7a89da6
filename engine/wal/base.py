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
from engine.wal.files import FileLayer, write_atomic
from engine.wal.record import GENESIS_HASH, frame_body, read_frame

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

    NAME = "base"

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._path = directory / self.NAME
        self._files = files

    def load(self) -> Base:
        """The base (genesis when the log was never trimmed).

        Raises:
            WALCorruptError: the file exists but is damaged: where the log
                begins is then unknown, and guessing could hide a hole.
        """
        if self.NAME not in self._files.list(self._path.parent):
            return GENESIS
        data = self._files.read(self._path)
        frame = read_frame(data, 0)
        if frame is None or not frame.crc_ok:
            raise WALCorruptError("the base file is damaged", self.NAME, 0)
        try:
            return msgspec.msgpack.decode(frame.body, type=Base)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise WALCorruptError("the base file does not decode", self.NAME, 0) from None

    def save(self, base: Base) -> None:
        """Replace the base atomically."""
        write_atomic(self._files, self._path, frame_body(msgspec.msgpack.encode(base)))
