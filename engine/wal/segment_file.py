"""The active segment: the one file the log appends to.

It begins segments (header, fsync, directory fsync), writes a group and
fdatasyncs it, and takes back a partial write when the disk is full, so that
a refused group leaves no bytes behind. Only the log's writer calls it, one
call at a time.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import final

from engine.wal.errors import DiskFullError
from engine.wal.files import FileLayer
from engine.wal.record import SEGMENT_MAGIC
from engine.wal.scan import SegmentInfo, segment_name

__all__ = ["DISK_FULL", "ActiveSegment"]

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@final
class ActiveSegment:
    """The handle on the last segment, and what may be done through it."""

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._dir = directory
        self._files = files
        self._handle: int | None = None

    def reopen(self, seg: SegmentInfo, *, truncate: bool) -> None:
        """Append to an existing segment (after recovery), cutting a torn tail first."""
        self._handle = self._files.open_append(seg.path)
        if truncate:
            self._files.truncate(self._handle, seg.size)
            if seg.size == 0:
                self._files.write(self._handle, SEGMENT_MAGIC)
                seg.size = len(SEGMENT_MAGIC)
        # After a process crash the tail may still be only in the page cache:
        # make what recovery read durable before it is served or answered as
        # a duplicate, or a later power cut could take back an ACK.
        self._files.sync(self._handle)
        self._files.sync_dir(self._dir)

    def begin(self, first_lsn: int) -> SegmentInfo:
        """Begin a segment (sealing the current one); a full disk leaves no trace.

        Raises:
            DiskFullError: no space for the new segment's header.
        """
        seg = SegmentInfo(self._dir / segment_name(first_lsn), first_lsn)
        handle = self._files.open_append(seg.path)
        try:
            self._files.truncate(handle, 0)
            self._files.write(handle, SEGMENT_MAGIC)
            self._files.sync(handle)
            self._files.sync_dir(self._dir)
        except OSError as exc:
            self._files.close(handle)
            self._files.remove(seg.path)
            if exc.errno in DISK_FULL:
                raise DiskFullError(f"no space left to begin a log segment in {self._dir}; retry later") from exc
            raise
        self.close()
        self._handle = handle
        return seg

    def write(self, seg: SegmentInfo, data: bytes) -> int:
        """Append and fdatasync `data`; return the offset it was written at.

        Raises:
            DiskFullError: no space; whatever part reached the file was taken back.
            OSError: any other I/O error (the log must stop).
        """
        assert self._handle is not None
        start = seg.size
        try:
            self._files.write(self._handle, data)
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            # If even the truncate fails, the file's end is unknown: that
            # OSError propagates and stops the log.
            self._files.truncate(self._handle, start)
            raise DiskFullError(
                f"no space left for {len(data)} bytes in {self._dir}; nothing was written, retry later"
            ) from exc
        self._files.sync(self._handle)
        return start

    def close(self) -> None:
        """Release the handle."""
        if self._handle is not None:
            self._files.close(self._handle)
            self._handle = None
