"""A fault-injecting file layer for the log's tests, in the spirit of SQLite's crash-test VFS.

It wraps the real file system and remembers, per file, how many bytes were
made durable by a sync. `power_loss()` then does what a power cut does: every
file loses what was written after its last sync, except, optionally, a torn
prefix of it. Faults can also be armed: an errno for the next write (after
writing part of the data), for the next sync, or a "crash at the next sync"
after which nothing reaches the disk any more.
"""

from __future__ import annotations

import errno as errno_codes
import os
from pathlib import Path

from engine.wal.files import OSFiles


class PowerLossError(OSError):
    """Raised by the layer when the simulated process is dead."""


class FaultyFiles:
    """`FileLayer` over the real disk, with durability tracking and armed faults."""

    def __init__(self) -> None:
        self.real = OSFiles()
        self._paths: dict[int, Path] = {}
        self.durable: dict[Path, int] = {}
        self.write_errno: int | None = None
        self.write_partial_bytes = 0
        self.sync_errno: int | None = None
        self.die_at_sync = False
        self.dead = False
        self.writes = 0
        self.syncs = 0

    # -- the FileLayer interface -------------------------------------------

    def open_append(self, path: Path) -> int:
        self._alive()
        handle = self.real.open_append(path)
        self._paths[handle] = path
        self.durable.setdefault(path, self.real.size(path))
        return handle

    def write(self, handle: int, data: bytes) -> None:
        self._alive()
        self.writes += 1
        if self.write_errno is not None:
            code, self.write_errno = self.write_errno, None
            self.real.write(handle, data[: self.write_partial_bytes])
            raise OSError(code, os.strerror(code))
        self.real.write(handle, data)

    def sync(self, handle: int) -> None:
        self._alive()
        self.syncs += 1
        if self.die_at_sync:
            self.dead = True
            raise PowerLossError(errno_codes.EIO, "simulated power loss")
        if self.sync_errno is not None:
            code = self.sync_errno
            raise OSError(code, os.strerror(code))
        self.real.sync(handle)
        path = self._paths[handle]
        self.durable[path] = self.real.size(path)

    def truncate(self, handle: int, size: int) -> None:
        self._alive()
        self.real.truncate(handle, size)
        path = self._paths[handle]
        self.durable[path] = min(self.durable.get(path, size), size)

    def close(self, handle: int) -> None:
        self._paths.pop(handle, None)
        self.real.close(handle)

    def read(self, path: Path, offset: int = 0, size: int = -1) -> bytes:
        return self.real.read(path, offset, size)

    def size(self, path: Path) -> int:
        return self.real.size(path)

    def list(self, directory: Path) -> list[str]:
        return self.real.list(directory)

    def replace(self, source: Path, target: Path) -> None:
        self._alive()
        self.real.replace(source, target)
        self.durable[target] = self.durable.pop(source, self.real.size(target))

    def sync_dir(self, directory: Path) -> None:
        self._alive()

    def remove(self, path: Path) -> None:
        self._alive()
        self.real.remove(path)
        self.durable.pop(path, None)

    # -- faults -------------------------------------------------------------

    def _alive(self) -> None:
        if self.dead:
            raise PowerLossError(errno_codes.EIO, "simulated process is dead")

    def power_loss(self, torn_bytes: int = 0) -> None:
        """Every file keeps only what was synced, plus `torn_bytes` of what was not."""
        for handle in list(self._paths):
            self.close(handle)
        for path, durable in list(self.durable.items()):
            if path.exists():
                keep = min(self.real.size(path), durable + torn_bytes)
                os.truncate(path, keep)
                # What survived the power cut is on the disk now.
                self.durable[path] = keep
        self.dead = False
        self.die_at_sync = False
        self.sync_errno = None
        self.write_errno = None
