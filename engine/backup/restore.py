"""`vigil restore BACKUP`: a backup checked file by file, copied into a new data directory, its log recovered.

The log's recovery of the copy checks every record's CRC and the hash
chain and must end at the manifest's LSN; `vigil audit verify` with the
audit key then proves the chain against the keyed checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import msgspec

from engine.backup.manifest import MANIFEST_FILE, BackupError, Manifest, digest_of, new_private_directory
from engine.infra.config import WalConfig
from engine.wal import OSFiles, WALCorruptError, open_wal, scan_log, sync_file

__all__ = ["check_backup", "restore_backup", "verify_backup"]


def verify_backup(backup: Path) -> Manifest:
    """The backup's manifest, once every file it names is there with its size and SHA-256.

    Raises:
        BackupError: no manifest (not a whole backup), or a file missing or changed (named).
    """
    try:
        manifest = msgspec.json.decode((backup / MANIFEST_FILE).read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise BackupError(f"{backup} has no {MANIFEST_FILE}: not a whole backup") from None
    except (OSError, msgspec.DecodeError) as exc:
        raise BackupError(f"{backup / MANIFEST_FILE} cannot be read: {exc}") from None
    for name, entry in manifest.files.items():
        path = backup / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BackupError(f"the manifest names {name!r}, outside the backup")
        if not path.is_file():
            raise BackupError(f"{name} is missing from the backup")
        if digest_of(path) != entry:
            raise BackupError(f"{name} differs from the manifest (size or SHA-256): the backup is damaged")
    return manifest


def check_backup(backup: Path) -> tuple[Manifest, int]:
    """A backup checked where it lies, nothing copied (a drill an operator can run every night).

    Every file against the manifest, then the log's copy scanned: every
    CRC and the hash chain, to the manifest's LSN. Returns the manifest and
    the records scanned.

    Raises:
        BackupError: a file missing or changed, or the log's copy damaged or short (named).
    """
    manifest = verify_backup(backup)
    try:
        scanned = scan_log(backup / "wal", OSFiles())
    except WALCorruptError as exc:
        raise BackupError(f"the log in {backup} is damaged: {exc}") from None
    damage = scanned.tail
    if damage is not None:
        where = f"{damage.segment} at byte {damage.offset} ({damage.reason})"
        raise BackupError(f"the log in {backup} is damaged: {where}; whole records end at LSN {scanned.last_lsn}")
    if scanned.last_lsn != manifest.last_lsn:
        raise BackupError(f"the log in {backup} ends at LSN {scanned.last_lsn}, its manifest at {manifest.last_lsn}")
    return manifest, scanned.records


async def restore_backup(backup: Path, data_dir: Path, config: WalConfig) -> Manifest:
    """Copy a verified backup into `data_dir` (absent or empty) and recover its log to the manifest's LSN.

    Raises:
        BackupError: the backup is not whole, `data_dir` holds something, or the log does not end where it should.
    """
    manifest = await anyio.to_thread.run_sync(verify_backup, backup)
    await anyio.to_thread.run_sync(_copy_in, backup, data_dir, manifest)
    async with open_wal(data_dir / "wal", config) as wal:
        if wal.last_lsn != manifest.last_lsn:
            raise BackupError(f"the restored log ends at LSN {wal.last_lsn}, the backup at {manifest.last_lsn}")
    return manifest


def _copy_in(backup: Path, data_dir: Path, manifest: Manifest) -> None:
    new_private_directory(data_dir, "a backup is restored into a new one")
    for name in manifest.files:
        target = data_dir / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(backup / name, target)
        sync_file(target)
