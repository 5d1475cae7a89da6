"""Keyed audit checkpoints: so that rewriting the whole chain is detected too.

The hash chain shows that no record was edited or removed *unless* someone
rewrote every record after it and recomputed the chain. Keyed checkpoints
close that gap: whenever the log checkpoints, it appends to `audit.chk` the
LSN, that record's chain hash, and an HMAC-SHA256 over them with a key the
log's host is given (an environment variable, never the repository). A
rewritten chain no longer matches the HMAC'd hashes, and forging new ones
needs the key.

Each entry also covers the previous entry's HMAC, so entries cannot be
reordered or removed from the middle. Removing entries from the end of the
file is not detectable from the file alone; shipping the entries off the host
(the cluster issue) is what closes that.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import Final, final

import msgspec

from engine.core.errors import ConfigError
from engine.wal.files import FileLayer
from engine.wal.record import FRAME, checksum, frame_body

__all__ = ["AUDIT_FILE", "AuditEntry", "AuditProblem", "KeyedCheckpoints", "audit_key_from_env"]

AUDIT_FILE: Final = "audit.chk"
_DOMAIN: Final = b"vigil-audit-checkpoint-v1"
_KEY_BYTES_MIN: Final = 16


def audit_key_from_env(variable: str) -> bytes | None:
    """The audit key from the named environment variable, or None if unset.

    Raises:
        ConfigError: the variable is set but too short to be a key.
    """
    value = os.environ.get(variable)
    if not value:
        return None
    key = value.encode()
    if len(key) < _KEY_BYTES_MIN:
        raise ConfigError(f"{variable} is set but shorter than {_KEY_BYTES_MIN} bytes: not a usable key")
    return key


@final
class AuditEntry(msgspec.Struct, frozen=True, array_like=True):
    """One keyed checkpoint."""

    lsn: int
    hash: bytes
    at: str
    mac: bytes


@final
class AuditProblem(msgspec.Struct, frozen=True):
    """What `verify` found wrong, with the entry's position."""

    entry: int
    lsn: int
    reason: str


def _mac(key: bytes, lsn: int, digest: bytes, at: str, previous: bytes) -> bytes:
    message = _DOMAIN + struct.pack("<Q", lsn) + digest + at.encode() + previous
    return hmac.new(key, message, hashlib.sha256).digest()


@final
class KeyedCheckpoints:
    """The append-only file of keyed checkpoints in a log directory."""

    def __init__(self, directory: Path, files: FileLayer, key: bytes) -> None:
        self._path = directory / AUDIT_FILE
        self._files = files
        self._key = key
        self._previous: bytes | None = None

    def entries(self) -> list[AuditEntry]:
        """Every whole entry (a torn last entry, from a crash mid-append, is left out)."""
        if AUDIT_FILE not in self._files.list(self._path.parent):
            return []
        data = self._files.read(self._path)
        out: list[AuditEntry] = []
        pos = 0
        while pos + FRAME.size <= len(data):
            length, crc = FRAME.unpack_from(data, pos)
            body = data[pos + FRAME.size : pos + FRAME.size + length]
            if len(body) != length or checksum(data[pos : pos + 4], body) != crc:
                break
            out.append(msgspec.msgpack.decode(body, type=AuditEntry))
            pos += FRAME.size + length
        return out

    def append(self, lsn: int, digest: bytes, at: str) -> None:
        """Append a keyed checkpoint for the record at `lsn` with chain hash `digest`."""
        if self._previous is None:
            existing = self.entries()
            self._previous = existing[-1].mac if existing else b""
        entry = AuditEntry(lsn, digest, at, _mac(self._key, lsn, digest, at, self._previous))
        handle = self._files.open_append(self._path)
        try:
            self._files.write(handle, frame_body(msgspec.msgpack.encode(entry)))
            self._files.sync(handle)
        finally:
            self._files.close(handle)
        self._previous = entry.mac

    def verify(self, hashes: dict[int, bytes], last_lsn: int, first_lsn: int = 1) -> tuple[int, AuditProblem | None]:
        """Check every entry's MAC and that the log's hash at its LSN is the one signed.

        `hashes` are the log's chain hashes at the entries' LSNs (from a scan
        that watched them); entries below `first_lsn` (released segments) are
        checked for their MAC only. Returns the number of entries and the first
        problem.
        """
        entries = self.entries()
        previous = b""
        for i, entry in enumerate(entries):
            if not hmac.compare_digest(entry.mac, _mac(self._key, entry.lsn, entry.hash, entry.at, previous)):
                return len(entries), AuditProblem(i, entry.lsn, "checkpoint MAC does not verify (wrong key, or edited)")
            if entry.lsn > last_lsn:
                return len(entries), AuditProblem(i, entry.lsn, f"log ends at LSN {last_lsn}: signed records are gone")
            if entry.lsn >= first_lsn and hashes.get(entry.lsn) != entry.hash:
                return len(entries), AuditProblem(
                    i, entry.lsn, "the log's record differs from the signed one (rewritten)"
                )
            previous = entry.mac
        return len(entries), None
