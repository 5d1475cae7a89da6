"""The file layer under the log: every byte the log reads or writes goes through here.

One small interface, `FileLayer`, with the real implementation (`OSFiles`) and,
in the tests, a fault-injecting one (torn writes, dropped unsynced writes,
EIO on fsync, ENOSPC) in the spirit of SQLite's crash-test VFS. The log never
calls `os` itself, so every failure mode can be reproduced on demand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, final

__all__ = ["FileLayer", "OSFiles", "write_atomic"]


class FileLayer(Protocol):
    """What the log needs from a file system."""

    def open_append(self, path: Path) -> int:
        """Open (creating) a file for appending; return a handle."""
        ...

    def write(self, handle: int, data: bytes) -> None:
        """Write all of `data` at the end, or raise OSError."""
        ...

    def sync(self, handle: int) -> None:
        """Make everything written through `handle` durable (fdatasync)."""
        ...

    def truncate(self, handle: int, size: int) -> None:
        """Cut the file to `size` bytes."""
        ...

    def close(self, handle: int) -> None:
        """Release the handle."""
        ...

    def read(self, path: Path, offset: int = 0, size: int = -1) -> bytes:
        """Read `size` bytes at `offset` (all to the end when -1)."""
        ...

    def size(self, path: Path) -> int:
        """The file's length in bytes."""
        ...

    def list(self, directory: Path) -> list[str]:
        """The names in a directory (creating it if absent)."""
        ...

    def replace(self, source: Path, target: Path) -> None:
        """Atomically rename `source` over `target`."""
        ...

    def sync_dir(self, directory: Path) -> None:
        """Make a directory's entries (creations, renames) durable."""
        ...

    def remove(self, path: Path) -> None:
        """Delete a file."""
        ...


@final
class OSFiles:
    """The real file system, through `os` with no buffering of its own."""

    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def write(self, handle: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # os.write may write less than asked (signals, quotas): loop until all is out.
            written = os.write(handle, view)
            view = view[written:]

    def sync(self, handle: int) -> None:
        os.fdatasync(handle)

    def truncate(self, handle: int, size: int) -> None:
        os.ftruncate(handle, size)

    def close(self, handle: int) -> None:
        os.close(handle)

    def read(self, path: Path, offset: int = 0, size: int = -1) -> bytes:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(size)

    def size(self, path: Path) -> int:
        return path.stat().st_size

    def list(self, directory: Path) -> list[str]:
        directory.mkdir(parents=True, exist_ok=True)
        return sorted(os.listdir(directory))

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def sync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def write_atomic(files: FileLayer, path: Path, data: bytes) -> None:
    """Replace a file's content atomically: write a temp file, fsync, rename, fsync the directory."""
    temp = path.with_name(path.name + ".tmp")
    files.remove(temp)
    handle = files.open_append(temp)
    try:
        files.write(handle, data)
        files.sync(handle)
    finally:
        files.close(handle)
    files.replace(temp, path)
    files.sync_dir(path.parent)
