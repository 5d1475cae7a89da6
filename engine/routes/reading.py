"""Reading the log for a route: each record decoded only as far as a route needs (its events' kinds, not the events)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from engine.routes.selection import Candidate
from engine.wal import MessageRecord, decode_message

__all__ = ["LogReader", "read_candidates"]


class LogReader(Protocol):
    """What a route needs of the log (a `WriteAheadLog`)."""

    @property
    def last_lsn(self) -> int: ...

    def read_from(self, lsn: int, decode: Callable[[bytes], MessageRecord]) -> Iterator[MessageRecord]: ...


def read_candidates(log: LogReader, first_lsn: int, count_max: int, bytes_max: int) -> list[Candidate]:
    """Up to `count_max` records (or about `bytes_max` of messages) from `first_lsn` on, as candidates.

    Blocking file reads: called in a worker thread.
    """
    out: list[Candidate] = []
    size = 0
    for record in log.read_from(first_lsn, decode_message):
        env = record.envelope
        patient = record.patients[0] if record.patients else ""
        out.append(
            Candidate(
                record.lsn,
                patient,
                env.lane,
                env.kind,
                env.message_type,
                env.message_id,
                env.raw,
                record.recorded_at,
                frozenset(e.event for e in env.events),
                env.trace_parent,
            )
        )
        size += len(env.raw)
        if len(out) >= count_max or size >= bytes_max:
            break
    return out
