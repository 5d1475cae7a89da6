"""The write-ahead log (node floor): durable records, checkpoints, verification."""

from engine.wal.base import Base, BaseStore
from engine.wal.checkpoint import Checkpoint, CheckpointStore
from engine.wal.copy import LogCut, copy_audit_checkpoints, copy_cut, sync_file
from engine.wal.errors import DiskFullError, WALCorruptError, WALError, WALFailedError, WALLockedError
from engine.wal.files import FileLayer, OSFiles, write_atomic
from engine.wal.group import Position
from engine.wal.keyed_checkpoints import KeyedCheckpoints, audit_key_from_env
from engine.wal.log import Durable, SegmentFile, WALStatistics, WriteAheadLog, open_wal
from engine.wal.packed_snapshots import PACKED_FILE, PackedSnapshotStore
from engine.wal.quarantine import POISON_RECORD, Quarantine, QuarantineItem
from engine.wal.reader import iter_records, records_in
from engine.wal.record import (
    GENESIS_HASH,
    SEGMENT_MAGIC,
    EventsRecord,
    LogRecord,
    MessageRecord,
    body_hash,
    decode_events,
    decode_lane,
    decode_message,
    decode_record,
    encode_frame,
    read_frame,
)
from engine.wal.scan import Progress, ScanResult, scan_log, segment_name
from engine.wal.small_file import DamagedFileError, SmallFile
from engine.wal.snapshots import Snapshot, Snapshots, SnapshotStore

__all__ = [
    "GENESIS_HASH",
    "PACKED_FILE",
    "POISON_RECORD",
    "SEGMENT_MAGIC",
    "Base",
    "BaseStore",
    "Checkpoint",
    "CheckpointStore",
    "DamagedFileError",
    "DiskFullError",
    "Durable",
    "EventsRecord",
    "FileLayer",
    "KeyedCheckpoints",
    "LogCut",
    "LogRecord",
    "MessageRecord",
    "OSFiles",
    "PackedSnapshotStore",
    "Position",
    "Progress",
    "Quarantine",
    "QuarantineItem",
    "ScanResult",
    "SegmentFile",
    "SmallFile",
    "Snapshot",
    "SnapshotStore",
    "Snapshots",
    "WALCorruptError",
    "WALError",
    "WALFailedError",
    "WALLockedError",
    "WALStatistics",
    "WriteAheadLog",
    "audit_key_from_env",
    "body_hash",
    "copy_audit_checkpoints",
    "copy_cut",
    "decode_events",
    "decode_lane",
    "decode_message",
    "decode_record",
    "encode_frame",
    "iter_records",
    "open_wal",
    "read_frame",
    "records_in",
    "scan_log",
    "segment_name",
    "sync_file",
    "write_atomic",
]
