"""Keeping the search index up with the log: the node's part that follows it, and a catch-up for the CLI.

The node indexes what became durable since its last look, every
`[search] interval_s`, in slices read and written in a worker thread (the
routes read the log the same way), only while no message is in flight: the
ACK path comes first, and a flood is indexed once it has passed. (Indexing
one slice per look even while busy cost `vigil run --stdin` 10-16% of its
throughput, 0.84-0.90x the code without search in the same run.) A stop
does not wait for it either: what is left, or what a node killed mid-way
left, the next node or the next search catches up (`vigil log` indexes
what is missing itself).

Each catch-up first checks the index's tip against the log (same LSN, same
time, same message id); a log that no longer holds it (rewound after a power
loss, replaced by a restore) has its index made again from the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, final

import anyio
import anyio.lowlevel
import structlog
from anyio.abc import TaskStatus

from engine.infra.config import SearchConfig
from engine.search.index import SearchIndex
from engine.search.rows import MessageRow, MetadataRecord, decode_row, row_of
from engine.wal import OSFiles, iter_records

__all__ = ["LogReader", "SearchFollower", "catch_up", "catch_up_files"]

_log = structlog.get_logger("vigil.search")


class LogReader(Protocol):
    """What the follower needs of the log (a `WriteAheadLog`)."""

    def read_from(self, lsn: int, decode: Callable[[bytes], MetadataRecord]) -> Iterator[MetadataRecord]: ...


def catch_up(index: SearchIndex, records: Callable[[int], Iterator[MetadataRecord]], count_max: int) -> tuple[int, int]:
    """Index up to `count_max` records after the tip (`records(lsn)` reads from `lsn` on).

    Returns how many were added and the LSN the index now holds up to (0: none).

    Blocking: called in a worker thread.
    """
    tip = index.tip()
    rows: list[MessageRow] = []
    seen_tip = tip is None
    for record in records(1 if tip is None else tip.lsn):
        if not seen_tip:
            assert tip is not None
            if (record.lsn, record.recorded_at, record.message_id) != (tip.lsn, tip.at, tip.message_id):
                break
            seen_tip = True
            continue
        rows.append(row_of(record))
        if len(rows) >= count_max:
            break
    if not seen_tip:
        assert tip is not None
        _log.warning("search.index_reset", reason="the log no longer holds the index's last record", tip_lsn=tip.lsn)
        index.reset()
        return catch_up(index, records, count_max)
    index.add(rows)
    return len(rows), rows[-1].lsn if rows else (tip.lsn if tip is not None else 0)


def catch_up_files(index: SearchIndex, wal_dir: Path, *, count_max: int = 5000) -> int:
    """Bring the index up to a log's files (read beside a live node, as `iter_records` is); how many were added."""
    files = OSFiles()
    added = 0
    while True:
        count, _ = catch_up(index, lambda lsn: iter_records(wal_dir, files, from_lsn=lsn, decode=decode_row), count_max)
        added += count
        if count < count_max:
            return added


@final
class SearchFollower:
    """The node's part that keeps its search index up with its log."""

    def __init__(
        self, path: Path, log: Callable[[], LogReader], config: SearchConfig, busy: Callable[[], bool]
    ) -> None:
        self._path = path
        self._log = log
        self._config = config
        self._busy = busy
        self.indexed_to = 0  # the last LSN the index holds, as of the last look
        self._index: SearchIndex | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        index = await anyio.to_thread.run_sync(SearchIndex, self._path)
        self._index = index
        try:
            task_status.started()
            while True:
                await self._catch_up(index)
                await anyio.sleep(self._config.interval_s)
        finally:
            self._index = None
            index.close()

    async def senders(self) -> list[tuple[str, int, int]]:
        """Each sender's last message time (microseconds) and count, as far as the index goes; [] while restarting."""
        index = self._index
        return [] if index is None else await anyio.to_thread.run_sync(index.senders)

    async def _catch_up(self, index: SearchIndex) -> None:
        """Slices until the index holds the whole log, or until a message is in flight (the ACKs come first)."""
        log, count_max = self._log(), self._config.slice_records

        def one_slice() -> tuple[int, int]:
            return catch_up(index, lambda lsn: log.read_from(lsn, decode_row), count_max)

        while not self._busy():
            added, self.indexed_to = await anyio.to_thread.run_sync(one_slice)
            if added < count_max:
                return
            await anyio.lowlevel.checkpoint()
