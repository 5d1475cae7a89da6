"""The message search index: a SQLite file of every logged message's metadata (no PHI), kept beside the log.

Search by control id, sender, type, time, lane or outcome on a log of
millions must not read the log: the index answers from its B-trees. It is
derived and disposable: made from the log by following it (the node does,
`engine.search.follower`), and made again from the log if lost or found not
to match it (its tip, the last record it holds, is checked against the log
before it is extended: a log that was rewound or replaced starts the index anew).

Writers (the node's follower; the CLI catching up a log no node is serving)
add rows in one transaction per slice with `INSERT OR IGNORE` on the LSN, so
two of them at once (a CLI beside a node that just started) cannot double a row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final, final

import msgspec

from engine.infra.sqlite_file import SqliteFile
from engine.search.rows import MessageRow, Outcome, SearchQuery, micros

__all__ = ["INDEX_FILE", "SearchIndex", "Tip"]

INDEX_FILE: Final = "search.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    lsn INTEGER PRIMARY KEY, at_us INTEGER NOT NULL, at TEXT NOT NULL, lane TEXT NOT NULL, kind TEXT NOT NULL,
    type TEXT NOT NULL, sender TEXT NOT NULL, control_id TEXT NOT NULL, source TEXT NOT NULL,
    reason TEXT NOT NULL, outcome TEXT NOT NULL, message_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_control_id ON messages (control_id);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender);
CREATE INDEX IF NOT EXISTS messages_type ON messages (type);
CREATE INDEX IF NOT EXISTS messages_at ON messages (at_us);
CREATE INDEX IF NOT EXISTS messages_lane ON messages (lane, at_us);
CREATE INDEX IF NOT EXISTS messages_reused ON messages (lsn) WHERE outcome = 'reused';
CREATE TABLE IF NOT EXISTS tip (one INTEGER PRIMARY KEY CHECK (one = 1), lsn INTEGER NOT NULL,
    at TEXT NOT NULL, message_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS senders (sender TEXT PRIMARY KEY, last_us INTEGER NOT NULL, messages INTEGER NOT NULL);
"""
# Pages kept in memory: a slice's inserts land all over its indexes (control ids are not in order).
_CACHE_MIB: Final = 32
_IN_MAX: Final = 500  # LSNs per `IN (...)`: under SQLite's limit on parameters
_COLUMNS: Final = "lsn, at, lane, kind, type, sender, control_id, source, reason, outcome, message_id"


@final
class Tip(msgspec.Struct, frozen=True):
    """The last record the index holds: to check it against the log before going on."""

    lsn: int
    at: str
    message_id: str


@final
class SearchIndex:
    """The search index file of a data directory; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Derived data: a crash may lose the last slice (the tip check and the log bring it back), never corrupt it.
        self._file = SqliteFile(path, _SCHEMA, synchronous="NORMAL", busy_ms=10_000, cache_mib=_CACHE_MIB)
        self._db, self._lock, self._transaction = self._file.db, self._file.lock, self._file.transaction
        self._fill_senders()

    @classmethod
    def of(cls, data_dir: Path) -> SearchIndex:
        """The index of a data directory (made empty when absent)."""
        return cls(data_dir / INDEX_FILE)

    def close(self) -> None:
        self._file.close()

    def tip(self) -> Tip | None:
        """The last record indexed, None when the index is empty."""
        with self._lock:
            row = self._db.execute("SELECT lsn, at, message_id FROM tip").fetchone()
        return None if row is None else Tip(*row)

    def reset(self) -> None:
        """Forget everything: the index is made again from the log."""
        with self._transaction() as db:
            db.execute("DELETE FROM messages")
            db.execute("DELETE FROM tip")
            db.execute("DELETE FROM senders")

    def senders(self) -> list[tuple[str, int, int]]:
        """Each sender (MSH-3^MSH-4) with the time of its last message (microseconds) and its message count."""
        with self._lock:
            return list(self._db.execute("SELECT sender, last_us, messages FROM senders ORDER BY sender"))

    def _fill_senders(self) -> None:
        """An index made before the senders table had it: filled once from the rows (later rows keep it up).

        Both looks go through an index (the table's key, `messages_sender`): an index whose
        messages have no sender (FHIR alone) is not scanned again at every open.
        """
        with self._transaction() as db:
            empty = db.execute("SELECT 1 FROM senders LIMIT 1").fetchone() is None
            if empty and db.execute("SELECT 1 FROM messages WHERE sender > '' LIMIT 1").fetchone() is not None:
                db.execute(
                    "INSERT INTO senders SELECT sender, MAX(at_us), COUNT(*) FROM messages "
                    "WHERE sender != '' GROUP BY sender"
                )

    def add(self, rows: Sequence[MessageRow]) -> None:
        """Log rows (in LSN order, after the tip) in one transaction; a message id seen before is `reused`."""
        if not rows:
            return
        with self._transaction() as db:
            first = self._first_lsns(db, {r.control_id for r in rows})
            values = []
            for row in rows:
                reused = row.message_id and first.setdefault(row.message_id, row.lsn) < row.lsn
                outcome = Outcome.REUSED if reused else Outcome.ACCEPTED
                values.append(
                    (
                        row.lsn,
                        micros(row.at),
                        row.at,
                        row.lane,
                        row.kind,
                        row.message_type,
                        row.sender,
                        row.control_id,
                        row.source,
                        row.reason,
                        outcome.value,
                        row.message_id,
                    )
                )
            db.executemany("INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            _count_senders(db, values)
            last = rows[-1]
            db.execute(
                "INSERT INTO tip VALUES (1, ?, ?, ?) ON CONFLICT (one) DO UPDATE SET "
                "lsn = excluded.lsn, at = excluded.at, message_id = excluded.message_id "
                "WHERE excluded.lsn > tip.lsn",
                (last.lsn, last.at, last.message_id),
            )

    @staticmethod
    def _first_lsns(db: sqlite3.Connection, control_ids: set[str]) -> dict[str, int]:
        """The first LSN of each message id already indexed under these control ids (its index, not a scan)."""
        first: dict[str, int] = {}
        wanted = sorted(control_ids)
        for i in range(0, len(wanted), _IN_MAX):
            chunk = wanted[i : i + _IN_MAX]
            sql = (
                f"SELECT message_id, MIN(lsn) FROM messages WHERE control_id IN ({', '.join('?' * len(chunk))}) "  # noqa: S608
                "GROUP BY message_id"
            )
            first.update(db.execute(sql, chunk).fetchall())
        return first

    def search(self, query: SearchQuery, *, limit: int) -> list[MessageRow]:
        """The logged messages a query finds, in log order, at most `limit` (rejected ones are not here)."""
        where, params = _where(query)
        sql = f"SELECT {_COLUMNS} FROM messages WHERE {where} ORDER BY lsn LIMIT ?"  # noqa: S608 (column names are ours)
        with self._lock:
            found = self._db.execute(sql, (*params, limit)).fetchall()
        return [_row(r) for r in found]

    def outcomes(self, lsns: Sequence[int]) -> dict[int, Outcome]:
        """The outcome of each of these logged messages the index holds."""
        out: dict[int, Outcome] = {}
        with self._lock:
            for i in range(0, len(lsns), _IN_MAX):
                chunk = lsns[i : i + _IN_MAX]
                sql = f"SELECT lsn, outcome FROM messages WHERE lsn IN ({', '.join('?' * len(chunk))})"  # noqa: S608
                out.update((lsn, Outcome(value)) for lsn, value in self._db.execute(sql, chunk))
        return out


def _count_senders(db: sqlite3.Connection, values: Sequence[tuple[object, ...]]) -> None:
    """Each sender's last time and count, from the rows after the tip (rows indexed before are not counted twice)."""
    found = db.execute("SELECT lsn FROM tip").fetchone()
    after = found[0] if found is not None else 0
    seen: dict[str, tuple[int, int]] = {}
    for value in values:
        lsn, at_us, sender = value[0], value[1], value[6]
        assert isinstance(lsn, int)
        assert isinstance(at_us, int)
        assert isinstance(sender, str)
        if lsn > after and sender:
            last, count = seen.get(sender, (0, 0))
            seen[sender] = (max(last, at_us), count + 1)
    db.executemany(
        "INSERT INTO senders VALUES (?, ?, ?) ON CONFLICT (sender) DO UPDATE SET "
        "last_us = max(last_us, excluded.last_us), messages = messages + excluded.messages",
        [(sender, last, count) for sender, (last, count) in seen.items()],
    )


def _where(query: SearchQuery) -> tuple[str, list[object]]:
    """The SQL of `SearchQuery.matches`, for logged rows: the same criteria, through the indexes."""
    clauses: list[str] = ["lsn >= ?"]
    params: list[object] = [query.from_lsn]
    if query.control_id is not None:
        clauses.append("control_id = ?")
        params.append(query.control_id)
    if query.sender is not None:
        _exact_or_prefix(clauses, params, "sender", query.sender, wildcard="^" not in query.sender)
    if query.message_type is not None:
        wildcard = query.message_type.endswith("^*")
        _exact_or_prefix(
            clauses, params, "type", query.message_type[:-2] if wildcard else query.message_type, wildcard=wildcard
        )
    if query.since is not None:
        clauses.append("at_us >= ?")
        params.append(micros(query.since))
    if query.until is not None:
        clauses.append("at_us < ?")
        params.append(micros(query.until))
    if query.lane is not None:
        clauses.append("lane = ?")
        params.append(query.lane)
    logged = query.outcomes - {Outcome.REJECTED}
    if logged == {Outcome.REUSED}:
        clauses.append("outcome = 'reused'")  # the literal term: what lets SQLite use the partial index
    elif logged == {Outcome.ACCEPTED}:
        clauses.append("outcome = 'accepted'")
    return " AND ".join(clauses), params


def _exact_or_prefix(clauses: list[str], params: list[object], column: str, value: str, *, wildcard: bool) -> None:
    """`column = value`, or every `value^...` (`APP` for `APP^FAC`, `ADT` for `ADT^A01`) as a range of the index."""
    if wildcard:
        # '_' follows '^': [value^, value_) holds exactly the texts that start with value^.
        clauses.append(f"{column} >= ? AND {column} < ?")
        params += [f"{value}^", f"{value}_"]
    else:
        clauses.append(f"{column} = ?")
        params.append(value)


def _row(found: tuple[object, ...]) -> MessageRow:
    lsn, at, lane, kind, mtype, sender, control_id, source, reason, outcome, message_id = found
    return MessageRow(
        int(str(lsn)),
        str(at),
        str(lane),
        str(kind),
        str(mtype),
        str(sender),
        str(control_id),
        str(source),
        str(reason),
        Outcome(outcome),
        str(message_id),
    )
