"""The write-ahead log (node floor): durable records, checkpoints, verification."""

from engine.wal.errors import DiskFullError, WALCorruptError, WALError, WALFailedError, WALLockedError
from engine.wal.files import FileLayer, OSFiles
from engine.wal.group import Position
from engine.wal.log import Durable, WALStatistics, WriteAheadLog, open_wal
from engine.wal.record import LogRecord
from engine.wal.scan import ScanResult, scan_log

__all__ = [
    "DiskFullError",
    "Durable",
    "FileLayer",
    "LogRecord",
    "OSFiles",
    "Position",
    "ScanResult",
    "WALCorruptError",
    "WALError",
    "WALFailedError",
    "WALLockedError",
    "WALStatistics",
    "WriteAheadLog",
    "open_wal",
    "scan_log",
]
