"""A small file holding one framed, CRC-checked value, replaced atomically.

The checkpoint, the saved index and the base are each one such file; they
differ only in what a damaged file means (ignore it, or refuse the log),
which stays with each of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, TypeVar, final

import msgspec

from engine.core.errors import VigilError
from engine.wal.files import FileLayer, write_atomic
from engine.wal.record import frame_body, read_frame

__all__ = ["DamagedFileError", "SmallFile"]

T = TypeVar("T")


class DamagedFileError(VigilError):
    """The file exists but its frame or content is damaged."""


@final
class SmallFile(Generic[T]):
    """One value of type `T` in `directory/name`."""

    def __init__(self, directory: Path, name: str, files: FileLayer, value_type: type[T]) -> None:
        self.path = directory / name
        self._files = files
        self._decoder = msgspec.msgpack.Decoder(value_type)

    def read(self) -> T | None:
        """The value, or None when the file does not exist.

        Raises:
            DamagedFileError: cut short, a CRC mismatch, or content that does not decode.
        """
        if self.path.name not in self._files.list(self.path.parent):
            return None
        frame = read_frame(self._files.read(self.path), 0)
        if frame is None or not frame.crc_ok:
            raise DamagedFileError("checksum mismatch or cut short")
        try:
            return self._decoder.decode(frame.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DamagedFileError(str(exc)) from None

    def write(self, value: T) -> None:
        """Replace the value atomically."""
        write_atomic(self._files, self.path, frame_body(msgspec.msgpack.encode(value)))

    def remove(self) -> None:
        """Delete the file (absent is fine)."""
        self._files.remove(self.path)
