"""Backup and restore (node floor): an online, consistent copy of a data directory, and its return."""

from engine.backup.manifest import MANIFEST_FILE, BackupError, Manifest
from engine.backup.restore import check_backup, restore_backup, verify_backup
from engine.backup.take import take_backup

__all__ = ["MANIFEST_FILE", "BackupError", "Manifest", "check_backup", "restore_backup", "take_backup", "verify_backup"]
