"""Quarantine: a durable log of input that could not be accepted (invariant 2).

Nothing is lost silently: a message that is refused keeps its original bytes
here with its source, the reason and the time. Entries are never rewritten;
resolving one (retried and accepted, resent as edited, discarded or marked
resolved by an operator) appends a resolution that names it, who resolved it
and why. The file uses the log's framing and is fsync'd on every append; a
torn last entry from a crash is cut off by the next append.

Its entries are read once and then followed: each look reads only what was
appended since (by this process or another), so a noisy feed's thousands of
refusals do not make each new one read them all again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Final, final

import msgspec

from engine.wal.files import FileLayer
from engine.wal.record import frame_body, read_frame

__all__ = ["POISON_RECORD", "QUARANTINE_FILE", "Quarantine", "QuarantineItem"]

QUARANTINE_FILE: Final = "quarantine.log"
# The error type of an item that is a logged record its patient's actor kept failing on (not refused input).
POISON_RECORD: Final = "PoisonRecord"


class _Entry(msgspec.Struct, frozen=True, tag_field="entry"):
    pass


@final
class _Quarantined(_Entry, frozen=True, tag="quarantined"):
    qid: int
    at: str
    source: str
    reason: str
    error: dict[str, Any]
    raw: bytes


@final
class _Resolved(_Entry, frozen=True, tag="resolved"):
    qid: int
    at: str
    outcome: str
    by: str = ""  # the user who resolved it ("" for the node itself, and for entries older than the field)
    note: str = ""  # their reason, in their words


@final
class QuarantineItem(msgspec.Struct, frozen=True):
    """One quarantined input and, once resolved, how."""

    qid: int
    at: str
    source: str
    reason: str
    error: dict[str, Any]
    raw: bytes  # empty in a summary
    resolved: str | None = None
    resolved_at: str | None = None
    resolved_by: str = ""
    note: str = ""
    size: int = 0  # the bytes' length (kept when `raw` is not: `Quarantine.summaries`)

    @property
    def open(self) -> bool:
        """Still waiting for someone to look at it."""
        return self.resolved is None


_DECODER = msgspec.msgpack.Decoder(_Quarantined | _Resolved)
_ENCODER = msgspec.msgpack.Encoder()


@final
class Quarantine:
    """The quarantine file of a data directory. One writer (the node) at a time."""

    def __init__(self, directory: Path, files: FileLayer) -> None:
        self._dir = directory
        self._path = directory / QUARANTINE_FILE
        self._files = files
        # What was read so far, without the bytes (a node keeps this for its life; the bytes stay on disk):
        # each item by id (ids grow, so oldest first) and where its entry is in the file.
        self._items: dict[int, QuarantineItem] = {}
        self._where: dict[int, tuple[int, int]] = {}
        self._last_qid = 0
        self._valid = 0  # the length of the file's whole entries read so far
        self._lock = threading.RLock()  # a node adds from worker threads while a status reads

    def _follow(self) -> int:
        """Read the entries appended since the last look; the length of the file's valid prefix."""
        size = self._size()
        if size < self._valid:  # cut back (a torn tail removed by another writer): read it all again
            self._items, self._where, self._valid = {}, {}, 0
        if size == self._valid:
            return size
        base = self._valid
        data = self._files.read(self._path, base)
        pos = 0
        while (frame := read_frame(data, pos)) is not None and frame.crc_ok:
            self._take(_DECODER.decode(frame.body), base + pos, base + frame.end)
            pos = frame.end
        self._valid += pos
        return self._valid

    def _take(self, entry: _Quarantined | _Resolved, start: int, end: int) -> None:
        if isinstance(entry, _Quarantined):
            self._items[entry.qid] = QuarantineItem(
                entry.qid, entry.at, entry.source, entry.reason, entry.error, b"", size=len(entry.raw)
            )
            self._where[entry.qid] = (start, end)
            self._last_qid = max(self._last_qid, entry.qid)
        elif entry.qid in self._items:
            self._items[entry.qid] = msgspec.structs.replace(
                self._items[entry.qid],
                resolved=entry.outcome,
                resolved_at=entry.at,
                resolved_by=entry.by,
                note=entry.note,
            )

    def items(self) -> list[QuarantineItem]:
        """Every quarantined input with its bytes, oldest first, with its resolution if any."""
        with self._lock:
            self._follow()
            data = self._files.read(self._path, 0, self._valid) if self._items else b""
            return [self._whole(item, data, self._where[item.qid][0]) for item in self._items.values()]

    def summaries(self) -> list[QuarantineItem]:
        """Every item without its bytes (`raw` is empty, `size` says how long): what a node keeps in memory."""
        with self._lock:
            self._follow()
            return list(self._items.values())

    def get(self, qid: int) -> QuarantineItem | None:
        """One item by id, with its bytes."""
        with self._lock:
            self._follow()
            item = self._items.get(qid)
            if item is None:
                return None
            start, end = self._where[qid]
            return self._whole(item, self._files.read(self._path, start, end - start), 0)

    @staticmethod
    def _whole(item: QuarantineItem, data: bytes, offset: int) -> QuarantineItem:
        frame = read_frame(data, offset)
        assert frame is not None, "an entry read before is in the file"
        entry = _DECODER.decode(frame.body)
        assert isinstance(entry, _Quarantined)
        return msgspec.structs.replace(item, raw=entry.raw)

    def add(self, raw: bytes, *, source: str, reason: str, error: dict[str, Any], at: str) -> int:
        """Keep a refused input durably; returns its quarantine id."""
        with self._lock:
            self._follow()
            qid = self._last_qid + 1
            self._append(_Quarantined(qid, at, source, reason, error, raw))
            return qid

    def resolve(self, qid: int, *, outcome: str, at: str, by: str = "", note: str = "") -> None:
        """Record how an item was resolved, by whom and why (it stays in the file)."""
        with self._lock:
            self._append(_Resolved(qid, at, outcome, by, note))

    def _append(self, entry: _Quarantined | _Resolved) -> None:
        valid = self._follow()
        handle = self._files.open_append(self._path)
        try:
            if valid != self._size():
                # A torn entry from a crash: cut it off, or new entries would hide behind it.
                self._files.truncate(handle, valid)
            self._files.write(handle, frame_body(_ENCODER.encode(entry)))
            self._files.sync(handle)
        finally:
            self._files.close(handle)
        self._files.sync_dir(self._dir)
        self._follow()

    def _size(self) -> int:
        return self._files.size(self._path) if QUARANTINE_FILE in self._files.list(self._dir) else 0
