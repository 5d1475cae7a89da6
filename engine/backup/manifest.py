"""A backup's manifest: what it holds (each file's size and SHA-256) and up to which LSN; written last."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final, final

import msgspec

from engine.core.errors import VigilError

__all__ = ["MANIFEST_FILE", "BackupError", "FileEntry", "Manifest", "digest_of", "new_private_directory"]

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

    def summary(self, dest: str) -> dict[str, object]:
        """What `vigil backup` answers: where, through which LSN, how many files and bytes."""
        total = sum(f.bytes for f in self.files.values())
        return {"dest": dest, "last_lsn": self.last_lsn, "files": len(self.files), "bytes": total}


def new_private_directory(path: Path, why: str) -> None:
    """`path` made owner-only, new or empty (a backup, or a data directory restored from one).

    Raises:
        BackupError: `path` holds something already (`why` says what goes there instead).
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{path} is not an empty directory: {why}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # it holds every record: as private as a data directory


def digest_of(path: Path) -> FileEntry:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return FileEntry(size, sha.hexdigest())
