"""`vigil backup DIR`: a consistent copy of a data directory, taken while its node serves.

What is copied: the log up to its durable end at one moment (`engine.wal.copy`),
its keyed audit checkpoints, the accounts and sessions store (SQLite's
online backup), the quarantine and each route's position. What is not: the
patient snapshots and the search index (made again from the log), the admin
socket, and any key (the audit key is an environment variable; TLS keys live
beside the configuration). The manifest is written last, so a backup
interrupted half-way is never taken for a whole one.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Final

import anyio
import msgspec

from engine.auth import STORE_FILE
from engine.backup.manifest import FORMAT, MANIFEST_FILE, BackupError, Manifest, digest_of, new_private_directory
from engine.infra.clock import utc_now
from engine.wal import OSFiles, WriteAheadLog, copy_audit_checkpoints, copy_cut, sync_file, write_atomic

__all__ = ["take_backup"]

_TREES: Final = ("quarantine", "routes")  # copied whole; written append-only or by atomic rename


async def take_backup(data_dir: Path, wal: WriteAheadLog, dest: Path, *, node: str) -> Manifest:
    """Copy the data directory served over `wal` into `dest` (absent or empty); the manifest says what is there.

    Raises:
        BackupError: `dest` holds something already, or a file could not be copied (named).
    """
    await anyio.to_thread.run_sync(_prepare, dest)
    try:
        # Sealed first: with the audit key, a keyed checkpoint at the durable end, so `vigil audit verify`
        # on the restored log vouches for it to there (a running node had written none since its start).
        await wal.seal()
        await anyio.to_thread.run_sync(copy_audit_checkpoints, wal.directory, dest / "wal")
        with wal.cut() as cut:
            await anyio.to_thread.run_sync(copy_cut, wal.directory, cut, dest / "wal")
        await anyio.to_thread.run_sync(_copy_store, data_dir / STORE_FILE, dest / STORE_FILE)
        for tree in _TREES:
            await anyio.to_thread.run_sync(_copy_tree, data_dir / tree, dest / tree)
        return await anyio.to_thread.run_sync(_write_manifest, dest, node, cut.last_lsn)
    except OSError as exc:
        raise BackupError(f"the backup into {dest} failed: {exc.strerror or exc} ({exc.filename or ''})") from None


def _prepare(dest: Path) -> None:
    new_private_directory(dest, "a backup goes into a new one")


def _copy_store(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy while the node writes sessions to it."""
    if not source.exists():
        return
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    sync_file(target)


def _copy_tree(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    # A rename's temp file is half of a write: the file it replaces is the state.
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.tmp"))
    for path in target.rglob("*"):
        if path.is_file():
            sync_file(path)


def _write_manifest(dest: Path, node: str, last_lsn: int) -> Manifest:
    files = {
        str(path.relative_to(dest)): digest_of(path)
        for path in sorted(dest.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    manifest = Manifest(FORMAT, node, utc_now(), last_lsn, files)
    write_atomic(OSFiles(), dest / MANIFEST_FILE, msgspec.json.format(msgspec.json.encode(manifest)))
    return manifest
