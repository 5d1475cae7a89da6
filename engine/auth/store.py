"""The accounts, sessions, break-the-glass grants and reviews of one node, in SQLite in its data directory.

SQLite (the standard library's): one file, transactions, crash-safe with
`synchronous=FULL` in WAL mode, and nothing to run beside the node, so
sessions survive a restart and break-the-glass works with NATS and PostgreSQL
down. Each row keeps its Struct as JSON beside the columns it is looked up by.
The file is created owner-only (0600). Thread-safe: one connection, one lock
(the node calls it from worker threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, TypeVar, final

import msgspec

from engine.auth.clients import ApiClient
from engine.auth.policy import Grant, Review, SessionRecord, User
from engine.auth.workstations import Workstation
from engine.infra.sqlite_file import SqliteFile

__all__ = ["STORE_FILE", "AuthStore"]

STORE_FILE: Final = "auth.db"
_T = TypeVar("_T", User, SessionRecord, Grant, Review, ApiClient, Workstation)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, user TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user);
CREATE TABLE IF NOT EXISTS grants (id TEXT PRIMARY KEY, session TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS grants_session ON grants (session);
CREATE TABLE IF NOT EXISTS reviews (id TEXT PRIMARY KEY, open INTEGER NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS reviews_open ON reviews (open);
CREATE TABLE IF NOT EXISTS api_clients (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS workstations (device TEXT PRIMARY KEY, doc BLOB NOT NULL);
"""


@final
class AuthStore:
    """Load and save the auth records of a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STORE_FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        # Owner-only before SQLite writes a byte: hashes are secrets too.
        self._file = SqliteFile(self.path, _SCHEMA, synchronous="FULL", busy_ms=5000)
        self._db, self._lock, self._transaction = self._file.db, self._file.lock, self._file.transaction

    @classmethod
    def open_private(cls, data_dir: Path) -> AuthStore:
        """The store of a data directory made owner-only first (the log and the admin socket live there too)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        return cls(data_dir)

    def close(self) -> None:
        self._file.close()

    def _rows(self, sql: str, params: tuple[object, ...], kind: type[_T]) -> list[_T]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [msgspec.json.decode(row[0], type=kind) for row in rows]

    # -- users -------------------------------------------------------------------

    def user(self, user_id: str) -> User | None:
        found = self._rows("SELECT doc FROM users WHERE id = ?", (user_id,), User)
        return found[0] if found else None

    def users(self) -> list[User]:
        return self._rows("SELECT doc FROM users ORDER BY id", (), User)

    def put_user(self, user: User) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO users VALUES (?, ?)", (user.id, msgspec.json.encode(user)))

    def add_user(self, user: User) -> bool:
        """Insert a new user; False if the id is taken."""
        with self._transaction() as db:
            cursor = db.execute("INSERT OR IGNORE INTO users VALUES (?, ?)", (user.id, msgspec.json.encode(user)))
            return cursor.rowcount == 1

    # -- sessions ----------------------------------------------------------------

    def session_by_token(self, token_hash: str) -> SessionRecord | None:
        found = self._rows("SELECT doc FROM sessions WHERE token_hash = ?", (token_hash,), SessionRecord)
        return found[0] if found else None

    def sessions_since(self, created_after: float) -> list[SessionRecord]:
        """Sessions not ended and started after `created_after` (those that may still be live)."""
        return self._rows(
            "SELECT doc FROM sessions WHERE json_extract(doc, '$.ended_at') = 0"
            " AND json_extract(doc, '$.created_at') > ?",
            (created_after,),
            SessionRecord,
        )

    def sessions_of(self, user_id: str) -> list[SessionRecord]:
        return self._rows("SELECT doc FROM sessions WHERE user = ?", (user_id,), SessionRecord)

    def put_session(self, session: SessionRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
                (session.id, session.token_hash, session.user, msgspec.json.encode(session)),
            )

    # -- break-the-glass -----------------------------------------------------------

    def grants_of(self, session_id: str) -> list[Grant]:
        return self._rows("SELECT doc FROM grants WHERE session = ?", (session_id,), Grant)

    def add_grant(self, grant: Grant, review: Review) -> None:
        """The grant and its review item, together or not at all."""
        with self._transaction() as db:
            db.execute("INSERT INTO grants VALUES (?, ?, ?)", (grant.id, grant.session, msgspec.json.encode(grant)))
            db.execute("INSERT INTO reviews VALUES (?, 1, ?)", (review.id, msgspec.json.encode(review)))

    def reviews(self, *, open_only: bool) -> list[Review]:
        if open_only:
            return self._rows("SELECT doc FROM reviews WHERE open = 1 ORDER BY rowid", (), Review)
        return self._rows("SELECT doc FROM reviews ORDER BY rowid", (), Review)

    def review(self, review_id: str) -> Review | None:
        found = self._rows("SELECT doc FROM reviews WHERE id = ?", (review_id,), Review)
        return found[0] if found else None

    def put_review(self, review: Review) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE reviews SET open = ?, doc = ? WHERE id = ?",
                (0 if review.reviewed_at else 1, msgspec.json.encode(review), review.id),
            )

    # -- API clients -----------------------------------------------------------------

    def client(self, client_id: str) -> ApiClient | None:
        found = self._rows("SELECT doc FROM api_clients WHERE id = ?", (client_id,), ApiClient)
        return found[0] if found else None

    def workstation(self, device: str) -> Workstation | None:
        found = self._rows("SELECT doc FROM workstations WHERE device = ?", (device,), Workstation)
        return found[0] if found else None

    def workstations(self) -> list[Workstation]:
        return self._rows("SELECT doc FROM workstations ORDER BY device", (), Workstation)

    def put_workstation(self, station: Workstation) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO workstations VALUES (?, ?)", (station.device, msgspec.json.encode(station))
            )

    def forget_workstation(self, device: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM workstations WHERE device = ?", (device,)).rowcount == 1

    def client_by_token(self, token_hash: str) -> ApiClient | None:
        found = self._rows("SELECT doc FROM api_clients WHERE token_hash = ?", (token_hash,), ApiClient)
        return found[0] if found else None

    def clients(self) -> list[ApiClient]:
        return self._rows("SELECT doc FROM api_clients ORDER BY id", (), ApiClient)

    def add_client(self, client: ApiClient) -> bool:
        """Insert a new client; False if the id is taken (ids are never reused: audit trails name them)."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO api_clients VALUES (?, ?, ?)",
                (client.id, client.token_hash, msgspec.json.encode(client)),
            )
            return cursor.rowcount == 1

    def put_client(self, client: ApiClient) -> None:
        """Replace a client's record (its token hash too: a rotated token replaces the old one)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE api_clients SET token_hash = ?, doc = ? WHERE id = ?",
                (client.token_hash, msgspec.json.encode(client), client.id),
            )
