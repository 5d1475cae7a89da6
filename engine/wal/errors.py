"""The log's errors.

    WALError                    (a VigilError)
     ├── WALCorruptError        damage before the tail: the log refuses to open
     ├── WALFailedError         an I/O error (fsync, EIO) stopped the log: restart
     ├── DiskFullError          no space: this append is refused, retry later
     └── WALLockedError         another process has the log open

`DiskFullError` is the only one a source should retry (HL7 `AE`); the log
stays readable and appends resume when space is freed. `WALFailedError` is
final for the process: after a failed fsync the kernel may have dropped the
dirty pages, so retrying on the same file could acknowledge lost data.
"""

from __future__ import annotations

from engine.core.errors import VigilError

__all__ = ["DiskFullError", "WALCorruptError", "WALError", "WALFailedError", "WALLockedError"]


class WALError(VigilError):
    """A write-ahead log error."""


class WALCorruptError(WALError):
    """The log is damaged before its tail; it will not be served with a hole."""

    def __init__(self, reason: str, segment: str, offset: int) -> None:
        super().__init__(f"{reason} in {segment} at byte {offset}; run `vigil wal verify` to see the extent")
        self.reason = reason
        self.segment = segment
        self.offset = offset


class WALFailedError(WALError):
    """The log hit an I/O error and stopped accepting appends."""


class DiskFullError(WALError):
    """No space left for this append; nothing was written. Retry later."""


class WALLockedError(WALError):
    """Another process holds the log's lock."""
