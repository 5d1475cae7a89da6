"""Reading the log's segments through descriptors kept open: reading a record opens no file.

A patient's record is read back one record at a time (`read_patient`), and
opening the segment file for each was a fifth of the time such a read took.
Segments are append-only and never replaced, so a descriptor stays right for
a segment's life; one is kept for each of the most recently read segments
(`keep`), read with `pread` (no shared file position: threads read at once).
A descriptor in use is never closed under its reader: eviction waits for
its last reader. A segment released by retention is forgotten first.

A reader that knows how much of a segment is durable (`durable`) may have
it mapped into memory (read-only) up to there: a read inside the map is a
copy, with no system call (a `pread` and its lock cost about 5 us a record
on this kind of machine, a slice 0.6 us). Durable bytes are never taken
back (a write refused for a full disk is cut back to where it began, past
them), so a map never covers bytes a file may lose. The segment being
written grows past its map: reads past it use `pread`, and the map is made
again once the durable part has grown by `remap_bytes`.

With a file layer other than the real one (a test injecting faults), every
read goes through that layer as before.
"""

from __future__ import annotations

import collections
import mmap
import os
import threading
from pathlib import Path
from typing import Final, final

from engine.wal.files import FileLayer, OSFiles

__all__ = ["SegmentReads"]

_KEEP: Final = 64
_REMAP_BYTES: Final = 1 << 20


@final
class _Descriptor:
    __slots__ = ("fd", "gone", "readers", "view")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.readers = 0
        self.gone = False  # evicted or forgotten while read: the last reader closes it
        self.view: mmap.mmap | None = None  # the file's bytes up to its size when mapped

    def remap(self, size: int) -> None:
        """Map the file's first `size` bytes, all durable (the old map goes: slices of it are copies, never views)."""
        old, self.view = self.view, mmap.mmap(self.fd, size, prot=mmap.PROT_READ)
        if old is not None:
            old.close()

    def close(self) -> None:
        if self.view is not None:
            self.view.close()
        os.close(self.fd)


@final
class SegmentReads:
    """`read(path, offset, size)` over kept-open descriptors, the most recent `keep` of them."""

    def __init__(self, files: FileLayer, keep: int = _KEEP, remap_bytes: int = _REMAP_BYTES) -> None:
        self._files = files
        self._direct = isinstance(files, OSFiles)
        self._keep = keep
        self._remap_bytes = remap_bytes
        self._open: collections.OrderedDict[Path, _Descriptor] = collections.OrderedDict()
        self._lock = threading.Lock()

    def read(self, path: Path, offset: int = 0, size: int = -1, *, durable: int = 0) -> bytes:
        """`size` bytes at `offset` (to the end when -1); fewer only at the end of the file.

        `durable`: the file's first bytes that are durable, which it may map (0: read it, map nothing).
        """
        if not self._direct:
            return self._files.read(path, offset, size)
        descriptor = self._acquire(path, durable)
        try:
            view = descriptor.view
            if size >= 0 and view is not None and offset + size <= len(view):
                return view[offset : offset + size]
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

    def _acquire(self, path: Path, durable: int) -> _Descriptor:
        """The path's descriptor; mapped (again) first when `durable` lies `remap_bytes` past its map and no
        one reads it (a map is closed only with no reader on it)."""
        with self._lock:
            descriptor = self._open.get(path)
            if descriptor is None:
                descriptor = _Descriptor(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                self._open[path] = descriptor
                self._evict()
            else:
                self._open.move_to_end(path)
            mapped = len(descriptor.view) if descriptor.view is not None else 0
            if durable >= mapped + self._remap_bytes and descriptor.readers == 0:
                descriptor.remap(durable)
            descriptor.readers += 1
            return descriptor

    def _release(self, descriptor: _Descriptor) -> None:
        with self._lock:
            descriptor.readers -= 1
            if descriptor.gone and descriptor.readers == 0:
                descriptor.close()

    def _evict(self) -> None:
        """The least recently read past `keep` go (under the lock)."""
        while len(self._open) > self._keep:
            _, oldest = self._open.popitem(last=False)
            self._retire(oldest)

    @staticmethod
    def _retire(descriptor: _Descriptor) -> None:
        descriptor.gone = True
        if descriptor.readers == 0:
            descriptor.close()
