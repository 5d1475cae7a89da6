"""Quarantine: a durable log of input that could not be accepted (invariant 2).

Nothing is lost silently: a message that is refused keeps its original bytes
here with its source, the reason and the time. Entries are never rewritten;
resolving one (it was retried and accepted, or dismissed by an operator)
appends a resolution that names it. The file uses the log's framing and is
fsync'd on every append; a torn last entry from a crash is cut off on open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, final

import msgspec

from engine.wal.files import FileLayer
from engine.wal.record import frame_body, read_frame

__all__ = ["QUARANTINE_FILE", "Quarantine", "QuarantineItem"]

QUARANTINE_FILE: Final = "quarantine.log"


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


@final
class QuarantineItem(msgspec.Struct, frozen=True):
    """One quarantined input and, once resolved, how."""

    qid: int
    at: str
    source: str
    reason: str
    error: dict[str, Any]
    raw: bytes
    resolved: str | None = None
    resolved_at: str | None = None

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

    def _read(self) -> tuple[list[_Quarantined | _Resolved], int]:
        """Every whole entry, and the length of the valid prefix of the file."""
        if QUARANTINE_FILE not in self._files.list(self._dir):
            return [], 0
        data = self._files.read(self._path)
        entries: list[_Quarantined | _Resolved] = []
        pos = 0
        while (frame := read_frame(data, pos)) is not None and frame.crc_ok:
            entries.append(_DECODER.decode(frame.body))
            pos = frame.end
        return entries, pos

    def items(self) -> list[QuarantineItem]:
        """Every quarantined input, oldest first, with its resolution if any."""
        entries, _ = self._read()
        items: dict[int, QuarantineItem] = {}
        for entry in entries:
            if isinstance(entry, _Quarantined):
                items[entry.qid] = QuarantineItem(
                    entry.qid, entry.at, entry.source, entry.reason, entry.error, entry.raw
                )
            elif entry.qid in items:
                items[entry.qid] = msgspec.structs.replace(
                    items[entry.qid], resolved=entry.outcome, resolved_at=entry.at
                )
        return list(items.values())

    def get(self, qid: int) -> QuarantineItem | None:
        """One item by id."""
        return next((item for item in self.items() if item.qid == qid), None)

    def add(self, raw: bytes, *, source: str, reason: str, error: dict[str, Any], at: str) -> int:
        """Keep a refused input durably; returns its quarantine id."""
        entries, _ = self._read()
        qid = 1 + max((e.qid for e in entries if isinstance(e, _Quarantined)), default=0)
        self._append(_Quarantined(qid, at, source, reason, error, raw))
        return qid

    def resolve(self, qid: int, *, outcome: str, at: str) -> None:
        """Record how an item was resolved (it stays in the file)."""
        self._append(_Resolved(qid, at, outcome))

    def _append(self, entry: _Quarantined | _Resolved) -> None:
        _, valid = self._read()
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

    def _size(self) -> int:
        return self._files.size(self._path) if QUARANTINE_FILE in self._files.list(self._dir) else 0
