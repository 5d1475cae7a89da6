"""The critical fast path: critical records into the worklist at once, ahead of any backlog.

The ordered cursor applies the log in order, and behind a million billing
records it may be minutes behind. A critical result must not wait for that:
the node hands each durable critical record here, and it is written to the
critical worklist in its own small transaction. The worklist's columns are
guarded by LSN (`definitions.TABLES`), so this write and the ordered
cursor's later one commute: whichever comes second changes nothing.
Best effort by design: a record dropped here (a full queue, a refused row,
the database away) is still applied by the ordered cursor.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import anyio
import asyncpg
from hdrh.histogram import HdrHistogram

from engine.infra.clock import monotonic
from engine.projections.database import REFUSED_DATA_ERRORS
from engine.projections.definitions import Projection, Record, build_changes
from engine.projections.writer import write_unordered

__all__ = ["CriticalPath"]

_QUEUE_MAX = 10_000  # critical records waiting; beyond, they are left to the ordered cursor


class CriticalPath:
    """Critical records waiting for the worklist, and the task that writes them."""

    def __init__(self, worklist: Projection, schema: str, clock: Callable[[], float] = monotonic) -> None:
        self._worklist = worklist
        self._schema = schema
        self._clock = clock
        self._queue: collections.deque[tuple[Record, float]] = collections.deque()
        self._ready: anyio.Event | None = None
        self.visible = HdrHistogram(1, 3_600_000_000, 2)  # durable to visible, in microseconds

    def offer(self, record: Record) -> None:
        """A durable critical record (never blocks; ignored until `run` has started)."""
        if self._ready is None:
            return
        if len(self._queue) < _QUEUE_MAX:
            self._queue.append((record, self._clock()))
        self._ready.set()

    async def run(self, pool: asyncpg.Pool[asyncpg.Record], applied: Callable[[], int]) -> None:
        """Write what is offered until cancelled; `applied()` is the ordered cursor's worklist position."""
        self._ready = anyio.Event()
        chosen = {self._worklist.name: self._worklist}
        try:
            while True:
                await self._ready.wait()
                self._ready = anyio.Event()
                items = list(self._queue)
                self._queue.clear()
                done = applied()
                records = [record for record, _at in items if record.lsn > done]
                changes = build_changes(records, {self._worklist.name: 0}, chosen)
                if changes.tables[self._worklist.name]:
                    async with pool.acquire() as conn:
                        try:
                            await write_unordered(conn, changes, self._schema)
                        except REFUSED_DATA_ERRORS:
                            continue  # the ordered cursor applies it and notes the issue
                now = self._clock()
                for _record, at in items:
                    self.visible.record_value(max(1, int((now - at) * 1_000_000)))
        finally:
            self._ready = None
            self._queue.clear()
