"""Log records and their framing: `length | crc32c | body`, bodies hash-chained.

The body is MessagePack (msgspec), an array holding the whole envelope and,
after it, the envelope's content digest. Recovery decodes a `RecordHead`, the
same array with the envelope left as raw bytes, so rebuilding the indexes
never pays for decoding events. (Records written before the digest existed
end at the envelope and decode with digest 0, "unknown".)

The CRC (CRC32C, in C) covers the length and the body, so a flipped bit in
either is caught. Each body holds the SHA-256 of the previous body: editing or
deleting any record breaks the chain after it (`vigil wal verify`).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final, final

import google_crc32c
import msgspec

from engine.core.model import Envelope, Event, Kind, Lane

__all__ = [
    "FRAME",
    "GENESIS_HASH",
    "SEGMENT_MAGIC",
    "EventsRecord",
    "Frame",
    "LaneRecord",
    "LogRecord",
    "MessageRecord",
    "RecordHead",
    "body_hash",
    "checksum",
    "decode_events",
    "decode_head",
    "decode_lane",
    "decode_message",
    "decode_record",
    "encode_frame",
    "frame_body",
    "read_frame",
]

FRAME: Final = struct.Struct("<II")  # body length, crc32c(length bytes + body)
SEGMENT_MAGIC: Final = b"VIGILWAL\x00\x00\x00\x01"  # file type and format version 1
GENESIS_HASH: Final = bytes(32)  # the "previous hash" of the first record


@final
class LogRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):  # no cycles: see engine.core.model
    """One durable record: where it sits in the log, and the envelope it keeps.

    Attributes:
        lsn: log sequence number, 1, 2, 3... without gaps.
        recorded_at: when the log recorded it (ISO 8601, UTC).
        partition: the patient's partition (0 in single-node mode).
        epoch: the partition owner's epoch (0 in single-node mode).
        message_id: the envelope's id, repeated here for the idempotency index.
        patients: every patient key the message touches (primary first).
        prev_hash: SHA-256 of the previous record's body.
        envelope: the message: original bytes, lane, events.
        digest: the envelope's content digest, repeated for the idempotency index.
    """

    lsn: int
    recorded_at: str
    partition: int
    epoch: int
    message_id: str
    patients: tuple[str, ...]
    prev_hash: bytes
    envelope: Envelope
    digest: int = 0


@final
class RecordHead(msgspec.Struct, frozen=True, array_like=True):
    """A `LogRecord` with the envelope left undecoded: what recovery needs."""

    lsn: int
    recorded_at: str
    partition: int
    epoch: int
    message_id: str
    patients: tuple[str, ...]
    prev_hash: bytes
    envelope: msgspec.Raw
    digest: int = 0


class _EventsOnly(msgspec.Struct, frozen=True, gc=False):
    """Of an envelope, its events and lane (what projections and a patient's fold need): the original bytes
    and the rest are skipped."""

    lane: Lane
    events: tuple[Event, ...] = ()


@final
class EventsRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A `LogRecord` decoded for its events and lane: what the read side and every activation need, at half
    the decoding."""

    lsn: int
    recorded_at: str
    partition: int
    epoch: int
    message_id: str
    patients: tuple[str, ...]
    prev_hash: msgspec.Raw
    envelope: _EventsOnly
    digest: int = 0


class EventKind(msgspec.Struct, frozen=True, gc=False):
    """Of an event, only its kind (its tag): the rest of it is skipped when decoding."""

    event: str = ""


class _MessageOnly(msgspec.Struct, frozen=True, gc=False):
    """Of an envelope, what delivering it needs: its events' kinds, not the events."""

    message_id: str
    kind: Kind
    message_type: str
    lane: Lane
    raw: bytes
    events: tuple[EventKind, ...] = ()
    trace_parent: str = ""


@final
class MessageRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A `LogRecord` decoded for its message but not its events: what a route needs."""

    lsn: int
    recorded_at: str
    partition: int
    epoch: int
    message_id: str
    patients: tuple[str, ...]
    prev_hash: msgspec.Raw
    envelope: _MessageOnly
    digest: int = 0


class _LaneOnly(msgspec.Struct, frozen=True, gc=False):
    """Of an envelope, its lane: what retention judges a record's age by."""

    lane: Lane


@final
class LaneRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A `LogRecord` decoded for its head, its chain link and its lane: what retention reads of a segment."""

    lsn: int
    recorded_at: str
    partition: int
    epoch: int
    message_id: str
    patients: tuple[str, ...]
    prev_hash: bytes
    envelope: _LaneOnly
    digest: int = 0


_ENCODER = msgspec.msgpack.Encoder()
_RECORD = msgspec.msgpack.Decoder(LogRecord)
_HEAD = msgspec.msgpack.Decoder(RecordHead)


def checksum(length_bytes: bytes, body: bytes) -> int:
    """CRC32C over the length field and the body."""
    return int(google_crc32c.extend(google_crc32c.value(length_bytes), body))


def body_hash(body: bytes) -> bytes:
    """The chain hash of a record: SHA-256 of its body."""
    return hashlib.sha256(body).digest()


_U32 = struct.Struct("<I")
_crc_of, _crc_more = google_crc32c.value, google_crc32c.extend


def frame_body(body: bytes) -> bytes:
    """`length | crc32c | body`: the framing of every file the log layer writes (on the append path: lean)."""
    size = len(body)
    return FRAME.pack(size, _crc_more(_crc_of(_U32.pack(size)), body)) + body


def encode_frame(record: LogRecord) -> tuple[bytes, bytes]:
    """The framed bytes of a record, and its body hash."""
    body = _ENCODER.encode(record)
    return frame_body(body), body_hash(body)


@final
class Frame(msgspec.Struct, frozen=True):
    """A frame found in a buffer: where its body is, and whether its CRC holds."""

    offset: int
    end: int
    body: bytes
    crc_ok: bool


def read_frame(buf: bytes, offset: int) -> Frame | None:
    """The frame at `offset`, or None when the buffer ends before it does (torn)."""
    if offset + FRAME.size > len(buf):
        return None
    length, crc = FRAME.unpack_from(buf, offset)
    end = offset + FRAME.size + length
    if end > len(buf):
        return None
    body = buf[offset + FRAME.size : end]
    return Frame(offset, end, body, checksum(buf[offset : offset + 4], body) == crc)


decode_events = msgspec.msgpack.Decoder(EventsRecord).decode
"""Decode a record's body for its events and lane, not its original bytes (raises msgspec errors if malformed)."""

decode_message = msgspec.msgpack.Decoder(MessageRecord).decode
"""Decode a record's body for its message without its events (raises msgspec errors on a malformed body)."""

decode_lane = msgspec.msgpack.Decoder(LaneRecord).decode
"""Decode a record's body for its head and lane (raises msgspec errors on a malformed body)."""

decode_head = _HEAD.decode
"""Decode a record's head (raises msgspec errors on a malformed body)."""


def decode_record(body: bytes | memoryview) -> LogRecord:
    """Decode a whole record (raises msgspec errors on a malformed body)."""
    return _RECORD.decode(body)
