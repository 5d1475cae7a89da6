"""A private SQLite file shared between threads: one connection, one lock, explicit transactions.

What the node keeps in SQLite (the accounts and sessions, the message search
index) is opened the same way: created owner-only (0600) before SQLite writes
a byte, in WAL mode, with a busy timeout so a second process (the CLI beside
the node) waits for the other's transaction instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, final

__all__ = ["SqliteFile"]


@final
class SqliteFile:
    """One SQLite file: `lock` guards the connection (`db`); `transaction()` writes all or nothing."""

    def __init__(
        self, path: Path, schema: str, *, synchronous: Literal["FULL", "NORMAL"], busy_ms: int, cache_mib: int = 2
    ) -> None:
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
            self.db.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
            self.db.executescript(schema)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE` .. `COMMIT`, rolled back on any error (the lock held throughout)."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
