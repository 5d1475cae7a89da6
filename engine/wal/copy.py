"""A consistent copy of the log while it is written: each segment up to its durable end at one moment.

Segments only grow, and a durable record's bytes never change, so the
prefix of each segment that was durable at the cut is a consistent log on
its own: recovery of the copy verifies every CRC and the hash chain, and
ends at the cut's last LSN. Nothing else in the log directory is needed:
the checkpoint and the saved index are made again, and the keyed audit
checkpoints are copied before the cut so none names a record past it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final, final

import msgspec

from engine.wal.files import OSFiles
from engine.wal.keyed_checkpoints import AUDIT_FILE

__all__ = ["LogCut", "copy_audit_checkpoints", "copy_cut", "sync_file"]

_CHUNK: Final = 1 << 20
_BASE: Final = "base"


@final
class LogCut(msgspec.Struct, frozen=True):
    """The log as durable at one moment: its last LSN and each segment's name and durable size."""

    last_lsn: int
    segments: tuple[tuple[str, int], ...]


def copy_audit_checkpoints(directory: Path, dest: Path) -> list[Path]:
    """The keyed audit checkpoints (taken before the cut: each names a record at or below it)."""
    source = directory / AUDIT_FILE
    if not source.exists():
        return []
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest / AUDIT_FILE)
    sync_file(dest / AUDIT_FILE)
    return [dest / AUDIT_FILE]


def copy_cut(directory: Path, cut: LogCut, dest: Path) -> list[Path]:
    """Copy each segment's durable prefix and the base (if the log was ever trimmed) into `dest`; fsync'd."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, size in cut.segments:
        with (directory / name).open("rb") as source, (dest / name).open("xb") as target:
            left = size
            while left:
                chunk = source.read(min(_CHUNK, left))
                if not chunk:
                    raise OSError(f"segment {name} is shorter than its durable size {size}")
                target.write(chunk)
                left -= len(chunk)
            target.flush()
            os.fsync(target.fileno())
        written.append(dest / name)
    if (directory / _BASE).exists():
        shutil.copyfile(directory / _BASE, dest / _BASE)
        sync_file(dest / _BASE)
        written.append(dest / _BASE)
    OSFiles().sync_dir(dest)
    return written


def sync_file(path: Path) -> None:
    """fsync a file by its path (a copy made with shutil, which does not)."""
    with path.open("rb") as f:
        os.fsync(f.fileno())
