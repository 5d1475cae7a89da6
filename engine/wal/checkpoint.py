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

from engine.wal.files import FileLayer
from engine.wal.small_file import DamagedFileError, SmallFile

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

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._file = SmallFile(directory, "checkpoint", files, Checkpoint)

    def load(self) -> Checkpoint | None:
        """The checkpoint, or None when absent or damaged (a damaged one is only slower)."""
        try:
            return self._file.read()
        except DamagedFileError as exc:
            _log.warning("wal.checkpoint_ignored", reason=str(exc))
            return None

    def save(self, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint atomically."""
        self._file.write(checkpoint)
