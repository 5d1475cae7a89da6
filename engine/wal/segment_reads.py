"""Reading the log's segments through descriptors kept open: reading a record opens no file.

A patient's record is read back one record at a time (`read_patient`), and
opening the segment file for each was a fifth of the time such a read took.
Segments are append-only and never replaced, so a descriptor stays right for
a segment's life; one is kept for each of the most recently read segments
(`keep`), read with `pread` (no shared file position: threads read at once).
A descriptor in use is never closed under its reader: eviction waits for
its last reader. A segment released by retention is forgotten first.

With a file layer other than the real one (a test injecting faults), every
read goes through that layer as before.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import Final, final

from engine.wal.files import FileLayer, OSFiles

__all__ = ["SegmentReads"]

_KEEP: Final = 64


@final
class _Descriptor:
    __slots__ = ("fd", "gone", "readers")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.readers = 0
        self.gone = False  # evicted or forgotten while read: the last reader closes it


@final
class SegmentReads:
    """`read(path, offset, size)` over kept-open descriptors, the most recent `keep` of them."""

    def __init__(self, files: FileLayer, keep: int = _KEEP) -> None:
        self._files = files
        self._direct = isinstance(files, OSFiles)
        self._keep = keep
        self._open: collections.OrderedDict[Path, _Descriptor] = collections.OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: Path, offset: int = 0, size: int = -1) -> bytes:
        """`size` bytes at `offset` (to the end when -1); fewer only at the end of the file."""
        if not self._direct:
            return self._files.read(path, offset, size)
        descriptor = self._acquire(path)
        try:
            if size < 0:
                size = max(0, os.fstat(descriptor.fd).st_size - offset)
            return os.pread(descriptor.fd, size, offset)
        finally:
            self._release(descriptor)

    def forget(self, path: Path) -> None:
        """The segment is about to be deleted: its descriptor goes (at once, or after its last reader)."""
        with self._lock:
            descriptor = self._open.pop(path, None)
            if descriptor is not None:
                self._retire(descriptor)

    def close(self) -> None:
        with self._lock:
            while self._open:
                self._retire(self._open.popitem()[1])

    def _acquire(self, path: Path) -> _Descriptor:
        with self._lock:
            descriptor = self._open.get(path)
            if descriptor is None:
                descriptor = _Descriptor(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                self._open[path] = descriptor
                self._evict()
            else:
                self._open.move_to_end(path)
            descriptor.readers += 1
            return descriptor

    def _release(self, descriptor: _Descriptor) -> None:
        with self._lock:
            descriptor.readers -= 1
            if descriptor.gone and descriptor.readers == 0:
                os.close(descriptor.fd)

    def _evict(self) -> None:
        """The least recently read past `keep` go (under the lock)."""
        while len(self._open) > self._keep:
            _, oldest = self._open.popitem(last=False)
            self._retire(oldest)

    @staticmethod
    def _retire(descriptor: _Descriptor) -> None:
        descriptor.gone = True
        if descriptor.readers == 0:
            os.close(descriptor.fd)
