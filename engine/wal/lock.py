"""One process per log: an exclusive flock on `LOCK` in the log directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import final

from engine.wal.errors import WALLockedError

__all__ = ["DirectoryLock"]


@final
class DirectoryLock:
    """Held for as long as a log is open; a second holder gets `WALLockedError` at once."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "LOCK"
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise WALLockedError(f"{self._path.parent} is in use by another process") from None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
