"""A backup's manifest: what it holds (each file's size and SHA-256) and up to which LSN; written last."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final, final

import msgspec

from engine.core.errors import VigilError

__all__ = ["MANIFEST_FILE", "BackupError", "FileEntry", "Manifest", "digest_of"]

MANIFEST_FILE: Final = "vigil-backup.json"
FORMAT: Final = 1


class BackupError(VigilError):
    """A backup that cannot be taken, or a backup that is not whole (named: which file, what is wrong)."""


@final
class FileEntry(msgspec.Struct, frozen=True):
    bytes: int
    sha256: str


@final
class Manifest(msgspec.Struct, frozen=True):
    """A whole backup: present only once every file it names was written and fsync'd."""

    format: int
    node: str
    taken_at: str
    last_lsn: int
    files: dict[str, FileEntry]


def digest_of(path: Path) -> FileEntry:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return FileEntry(size, sha.hexdigest())
