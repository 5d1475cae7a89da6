"""Checkpoints: the last LSN known durable and verified, with its chain hash.

Recovery trusts records before the checkpoint (they were verified when it was
written; `vigil wal verify` re-checks everything) and verifies CRCs and the
hash chain from it to the tail. The file is framed with a CRC and replaced
atomically; a damaged checkpoint is ignored (with a warning) and the whole
chain is verified instead, which is slower but never wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import final

import msgspec
import structlog

from engine.wal.files import FileLayer, write_atomic
from engine.wal.record import FRAME, checksum, frame_body

__all__ = ["Checkpoint", "CheckpointStore"]

_log = structlog.get_logger("vigil.wal")


@final
class Checkpoint(msgspec.Struct, frozen=True, array_like=True):
    """The last durable LSN at checkpoint time, the hash of its body, and when."""

    lsn: int
    hash: bytes
    at: str


@final
class CheckpointStore:
    """Reads and writes the log directory's `checkpoint` file."""

    NAME = "checkpoint"

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._path = directory / self.NAME
        self._files = files

    def load(self) -> Checkpoint | None:
        """The checkpoint, or None when absent or damaged."""
        if self.NAME not in self._files.list(self._path.parent):
            return None
        data = self._files.read(self._path)
        if len(data) < FRAME.size:
            return self._ignored("cut short")
        length, crc = FRAME.unpack_from(data, 0)
        body = data[FRAME.size : FRAME.size + length]
        if len(body) != length or checksum(data[:4], body) != crc:
            return self._ignored("checksum mismatch")
        try:
            return msgspec.msgpack.decode(body, type=Checkpoint)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._ignored(str(exc))

    @staticmethod
    def _ignored(reason: str) -> None:
        _log.warning("wal.checkpoint_ignored", reason=reason)

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically."""
        write_atomic(self._files, self._path, frame_body(msgspec.msgpack.encode(checkpoint)))
