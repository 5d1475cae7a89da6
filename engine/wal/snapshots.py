"""Snapshots: where actors keep their state at an LSN, so activation need not replay everything.

A snapshot is only a cache (invariant 3): the log stays the truth, and a test
checks snapshot + tail == full replay. Files are written atomically (temp
file, fsync, rename, fsync the directory), framed with a CRC, and named by a
hash of the key, never the key itself (patient keys are identifiers: PHI).
The newest valid snapshot wins; a damaged one is skipped for the one before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol, final

import msgspec

from engine.wal.files import FileLayer, write_atomic
from engine.wal.record import frame_body, read_frame

__all__ = ["Snapshot", "SnapshotStore", "Snapshots", "decode_snapshot"]

_SUFFIX: Final = ".snap"


@final
class Snapshot(msgspec.Struct, frozen=True, array_like=True):
    """An actor's state, opaque bytes, as of (and including) `lsn`."""

    key: str
    lsn: int
    at: str
    state: bytes


_DECODER = msgspec.msgpack.Decoder(Snapshot)


class Snapshots(Protocol):
    """Where actors' snapshots are kept: a folder each (`SnapshotStore`) or one file (`PackedSnapshotStore`)."""

    def save(self, snapshot: Snapshot) -> None: ...
    def save_many(self, snapshots: Sequence[Snapshot]) -> None: ...
    def exists(self, key: str) -> bool: ...
    def load(self, key: str, *, at_most_lsn: int | None = None) -> Snapshot | None: ...


@final
class SnapshotStore:
    """Snapshots under one directory, keeping the newest `keep` per key."""

    def __init__(self, directory: Path, files: FileLayer, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep at least one snapshot per key")
        self._dir = directory
        self._files = files
        self._keep = keep

    def _folder(self, key: str) -> Path:
        return self._dir / hashlib.sha256(key.encode()).hexdigest()[:32]

    def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        """`save`, one after the other."""
        for snapshot in snapshots:
            self.save(snapshot)

    def save(self, snapshot: Snapshot) -> None:
        """Write atomically, then drop the oldest beyond `keep`."""
        folder = self._folder(snapshot.key)
        names = self._names(folder)
        name = f"{snapshot.lsn:020d}{_SUFFIX}"
        write_atomic(self._files, folder / name, frame_body(msgspec.msgpack.encode(snapshot)))
        for old in sorted({*names, name})[: -self._keep]:
            self._files.remove(folder / old)

    def exists(self, key: str) -> bool:
        """Whether `key` may have a snapshot (its folder exists): one stat, nothing read."""
        return self._folder(key).is_dir()

    def load(self, key: str, *, at_most_lsn: int | None = None) -> Snapshot | None:
        """The newest valid snapshot of `key` (no newer than `at_most_lsn`), or None."""
        folder = self._folder(key)
        if not folder.is_dir():
            return None  # a patient never snapshotted (most first-seen ones): no folder made to find that out
        for name in reversed(self._names(folder)):
            lsn = int(name.removesuffix(_SUFFIX))
            if at_most_lsn is not None and lsn > at_most_lsn:
                continue
            snapshot = decode_snapshot(self._files.read(folder / name), key, lsn)
            if snapshot is not None:
                return snapshot
        return None

    def _names(self, folder: Path) -> list[str]:
        return sorted(n for n in self._files.list(folder) if n.endswith(_SUFFIX))


def decode_snapshot(data: bytes, key: str, lsn: int) -> Snapshot | None:
    """A stored snapshot's frame read back: None when damaged (CRC, decoding) or not the one asked for."""
    frame = read_frame(data, 0)
    if frame is None or not frame.crc_ok:
        return None
    try:
        snapshot = _DECODER.decode(frame.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return snapshot if snapshot.key == key and snapshot.lsn == lsn else None
