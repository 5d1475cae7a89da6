"""Snapshots packed in one SQLite file: a hospital's millions of patients in one file, not a folder each.

The directory store (`SnapshotStore`) made a folder and a file per patient
snapshotted: a million patients is a million folders to create, stat and back
up. Here each snapshot is a row keyed by a hash of the patient key (never the
key itself: it is PHI), its body framed with a CRC as before, the newest
`keep` per key kept. Snapshots are a cache (invariant 3: the log is the
truth), so commits are not fsync'd one by one (`synchronous=NORMAL`): a crash
may lose the last few, and those patients are folded from the log again.

A data directory written by the directory store is read as it is: a key with
no packed snapshot falls back to its folder, and the folder goes once the key
has a packed one.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final, final

import msgspec

from engine.infra.sqlite_file import SqliteFile
from engine.wal.files import FileLayer
from engine.wal.record import frame_body
from engine.wal.snapshots import Snapshot, SnapshotStore, decode_snapshot

__all__ = ["PACKED_FILE", "PackedSnapshotStore"]

PACKED_FILE: Final = "snapshots.sqlite"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS snapshots (key_hash TEXT NOT NULL, lsn INTEGER NOT NULL, body BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS snapshots_key ON snapshots (key_hash, lsn);
"""
# A rowid table, not WITHOUT ROWID: a body of a kilobyte or more packs badly in a clustered index
# (5,000 snapshots of 1 KB took 23 MB that way, 5.4 MB this way).


@final
class PackedSnapshotStore:
    """The same contract as `SnapshotStore` (save, exists, load), in one file under `directory`."""

    def __init__(self, directory: Path, files: FileLayer, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep at least one snapshot per key")
        directory.mkdir(parents=True, exist_ok=True)
        self._db = SqliteFile(directory / PACKED_FILE, _SCHEMA, synchronous="NORMAL", busy_ms=5000, cache_mib=16)
        # Reads on a connection of their own: `exists` runs on the event loop, and in WAL mode a reader
        # never waits for a save (or its checkpoint's fsync) holding the writing connection.
        self._reads = SqliteFile(directory / PACKED_FILE, _SCHEMA, synchronous="NORMAL", busy_ms=5000, cache_mib=16)
        self._legacy = SnapshotStore(directory, files, keep)
        # Whether the directory store left folders here: none, and a key with no packed snapshot has none
        # at all, without two stats per first-seen patient (only the directory store makes folders).
        self._legacy_folders = any(entry.is_dir() for entry in directory.iterdir())
        self._dir = directory
        self._keep = keep

    def close(self) -> None:
        self._reads.close()
        self._db.close()

    def save(self, snapshot: Snapshot) -> None:
        """Insert, then drop the oldest beyond `keep`; a folder the directory store left for the key goes."""
        self.save_many([snapshot])

    def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        """`save` for many, in one transaction (retention snapshots thousands of patients at once)."""
        rows = [(_hash(s.key), s.lsn, frame_body(msgspec.msgpack.encode(s))) for s in snapshots]
        with self._db.transaction() as db:
            for key_hash, lsn, body in rows:
                db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", (key_hash, lsn, body))
                db.execute(
                    "DELETE FROM snapshots WHERE key_hash = ? AND lsn NOT IN "
                    "(SELECT lsn FROM snapshots WHERE key_hash = ? ORDER BY lsn DESC LIMIT ?)",
                    (key_hash, key_hash, self._keep),
                )
        for key_hash, _lsn, _body in rows if self._legacy_folders else ():
            legacy = self._dir / key_hash
            if legacy.is_dir():
                shutil.rmtree(legacy, ignore_errors=True)

    def exists(self, key: str) -> bool:
        """Whether `key` may have a snapshot: one indexed look (or its old folder's stat)."""
        with self._reads.lock:
            found = self._reads.db.execute("SELECT 1 FROM snapshots WHERE key_hash = ? LIMIT 1", (_hash(key),))
            if found.fetchone() is not None:
                return True
        return self._legacy_folders and self._legacy.exists(key)

    def load(self, key: str, *, at_most_lsn: int | None = None) -> Snapshot | None:
        """The newest valid snapshot of `key` (no newer than `at_most_lsn`), or None; a damaged one is passed over."""
        limit = at_most_lsn if at_most_lsn is not None else (1 << 62)
        with self._reads.lock:
            rows = self._reads.db.execute(
                "SELECT lsn, body FROM snapshots WHERE key_hash = ? AND lsn <= ? ORDER BY lsn DESC",
                (_hash(key), limit),
            ).fetchall()
        for lsn, body in rows:
            snapshot = decode_snapshot(body, key, lsn)
            if snapshot is not None:
                return snapshot
        return None if rows or not self._legacy_folders else self._legacy.load(key, at_most_lsn=at_most_lsn)

    def count(self) -> int:
        """Snapshots held (packed only)."""
        with self._reads.lock:
            return int(self._reads.db.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])


def _hash(key: str) -> str:
    """The directory store's folder name, so an old folder is found by the same hash."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]
