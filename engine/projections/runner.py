"""The projection runner: follows the log into PostgreSQL, exactly once, whatever the database does.

Never on the write path: the node appends and acknowledges without waiting
for the runner; it only `notify`s it of each durable record. The runner reads
the log itself (in a worker thread), from the lowest position of the
projections it runs, and writes each batch in one transaction that also moves
the positions (`writer.write_changes`), so a batch is applied once and a stop
at any moment resumes where the database says.

Lanes reach the read side too: a critical record is written to the critical
worklist at once (`critical_path`), ahead of any batch backlog; the ordered
cursor applies it again later, which the worklist's LSN guards make a no-op.

Outages: while PostgreSQL is unreachable or slow the runner waits and retries
(backoff up to `retry_delay_max_s`), reports its state and lag, and catches up
when the database returns. Bad data never stops it: values that do not fit
are kept raw and counted (`definitions`), and a batch the database still
refuses is applied record by record, the refused record noted as an issue.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, final

import anyio
import anyio.lowlevel
import asyncpg
import msgspec
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from hdrh.histogram import HdrHistogram

from engine.core.model import Lane
from engine.infra.clock import monotonic, wall_now
from engine.infra.config import ProjectionsConfig
from engine.projections.critical_path import CriticalPath
from engine.projections.database import CONNECTION_ERRORS, REFUSED_DATA_ERRORS, open_pool
from engine.projections.definitions import TABLES, Record, build_changes, projections
from engine.projections.schema import migrate
from engine.projections.tables import Changes, Issue, Key
from engine.projections.writer import PositionMovedError, Step, plan, write_changes
from engine.wal import EventsRecord, LogRecord, decode_events
from lanes import values_at_percentiles

if TYPE_CHECKING:
    from engine.projections.database import Connection

__all__ = ["LogReader", "ProjectionRunner", "ProjectionStatus", "record_of"]

_log = structlog.get_logger("vigil.projections")

_PENDING_MAX = 200_000  # notified records whose visibility is timed; beyond this the oldest go untimed
_SLICE_RECORDS = 200  # records read and folded between two turns of the event loop (a few ms)


class LogReader(Protocol):
    """What the runner needs of the log (a `WriteAheadLog`)."""

    @property
    def last_lsn(self) -> int: ...

    def read_from(self, lsn: int, decode: Callable[[bytes], EventsRecord]) -> Iterator[EventsRecord]: ...


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def record_of(log_record: LogRecord | EventsRecord) -> Record:
    return Record(log_record.lsn, log_record.recorded_at, log_record.patients, log_record.envelope.events)


@final
class ProjectionStatus(msgspec.Struct, frozen=True):
    """What `vigil status` shows of the read side."""

    state: str
    positions: dict[str, int]
    last_lsn: int
    lag_records: int
    lag_s: float
    batches: int
    records_applied: int
    issues_noted: int
    visible_p50_ms: float
    visible_p99_ms: float
    critical_visible_p99_ms: float


@final
class _Batch(msgspec.Struct):
    records: list[Record]
    steps: list[Step]
    issues: list[Issue]
    expected: dict[str, int]
    new: dict[str, int]


class ProjectionRunner:
    """Runs the chosen projections (all by default) against the log `reader`."""

    def __init__(
        self,
        reader: LogReader,
        config: ProjectionsConfig,
        dsn: str,
        *,
        base: Path,
        critical_flags: Sequence[str],
        only: Sequence[str] | None = None,
        clock: Callable[[], float] = monotonic,
        wall: Callable[[], datetime] = wall_now,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._on_worklist: set[Key] = set()  # (patient, result key) pairs the worklist holds: see definitions
        every = projections(critical_flags, self._on_worklist)
        unknown = [name for name in only or () if name not in every]
        if unknown:
            raise ValueError(f"no projection named {', '.join(unknown)} (there are: {', '.join(every)})")
        self._chosen = {n: p for n, p in every.items() if only is None or n in only}
        worklist = self._chosen.get("critical_worklist")
        self._critical = (
            CriticalPath(worklist, config.schema, clock) if worklist and config.critical_fast_path else None
        )
        self._reader = reader
        self._config = config
        self._dsn = dsn
        self._base = base
        self._clock = clock
        self._wall = wall
        self._busy = busy
        self._state = "starting"
        self._positions: dict[str, int] = {}
        self._cursor: Iterator[EventsRecord] | None = None
        self._cursor_next = 0
        self._pending: collections.deque[tuple[int, float]] = collections.deque()
        self._more: anyio.Event | None = None
        self._visible = HdrHistogram(1, 3_600_000_000, 2)
        self._batches = 0
        self._applied = 0
        self._issues = 0

    # -- what the node calls -------------------------------------------------------------

    def notify(self, record: Record, lane: Lane) -> None:
        """A record is durable (called by the node after the append; never blocks)."""
        now = self._clock()
        self._pending.append((record.lsn, now))
        if len(self._pending) > _PENDING_MAX:
            self._pending.popleft()
        if self._more is not None:
            self._more.set()
        if lane is Lane.CRITICAL and self._critical is not None:
            self._critical.offer(record)

    def lag(self) -> tuple[int, float]:
        """(records not yet applied, age in seconds of the oldest of them)."""
        last = self._reader.last_lsn
        applied = min(self._positions.values()) if self._positions else 0
        return max(0, last - applied), round(self._lag_s(applied, last), 3)

    def needs_from(self) -> int:
        """The lowest LSN a projection has yet to apply (0 before positions are loaded: it cannot say)."""
        return min(self._positions.values()) + 1 if self._positions else 0

    def status(self) -> ProjectionStatus:
        lag_records, lag_s = self.lag()
        visible_p50, visible_p99 = values_at_percentiles(self._visible, (50, 99))
        return ProjectionStatus(
            state=self._state,
            positions=dict(self._positions),
            last_lsn=self._reader.last_lsn,
            lag_records=lag_records,
            lag_s=lag_s,
            batches=self._batches,
            records_applied=self._applied,
            issues_noted=self._issues,
            visible_p50_ms=visible_p50 / 1000,
            visible_p99_ms=visible_p99 / 1000,
            critical_visible_p99_ms=self._critical_p99_ms(),
        )

    def _lag_s(self, applied: int, last: int) -> float:
        """How old the oldest record not yet applied is (by the log's own time of recording)."""
        if applied >= last:
            return 0.0
        oldest = next(iter(self._reader.read_from(applied + 1, decode_events)), None)
        if oldest is None:
            return 0.0
        try:
            recorded = datetime.fromisoformat(oldest.recorded_at)
        except ValueError:
            return 0.0
        return max(0.0, (self._wall() - recorded).total_seconds())

    def _critical_p99_ms(self) -> float:
        return values_at_percentiles(self._critical.visible, (99,))[0] / 1000 if self._critical is not None else 0.0

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the log until cancelled, through any outage of the database."""
        self._more = anyio.Event()
        task_status.started()
        await self._serve(until_caught_up=False)

    async def catch_up(self) -> None:
        """Apply everything the log holds now, then return (a rebuild without a node, a benchmark)."""
        self._more = anyio.Event()
        await self._serve(until_caught_up=True)

    async def _serve(self, *, until_caught_up: bool) -> None:
        delay = 0.1
        while True:
            try:
                await self._connected(until_caught_up)
                if until_caught_up:
                    return
            except Exception as exc:  # noqa: BLE001 -- a failed read side degrades the node, never stops it
                leaves = _leaves(exc)
                if any(isinstance(e, PositionMovedError) for e in leaves):
                    _log.info("projections.position_moved")  # a rebuild reset a projection: reload
                    self._cursor = None
                    delay = 0.0
                elif all(isinstance(e, CONNECTION_ERRORS) for e in leaves):
                    self._waiting(leaves[0])
                else:
                    self._failed(leaves)
            await anyio.sleep(delay)
            delay = min(max(delay * 2, 0.1), self._config.retry_delay_max_s)

    def _waiting(self, exc: BaseException) -> None:
        # The class and SQLSTATE only: a server's message may quote a value (PHI).
        reason = type(exc).__name__
        state = f"waiting for the database ({reason})"
        if state != self._state:
            _log.warning("projections.database_unavailable", reason=reason, sqlstate=getattr(exc, "sqlstate", None))
        self._state = state

    def _failed(self, leaves: list[BaseException]) -> None:
        """An error of the runner itself: retried after a pause, shown in the status, logged without values."""
        reasons = sorted({type(e).__name__ for e in leaves})
        self._state = f"failed, retrying ({', '.join(reasons)})"
        _log.error("projections.failed", reasons=reasons, sqlstate=[getattr(e, "sqlstate", None) for e in leaves])

    async def _connected(self, until_caught_up: bool) -> None:
        pool = await open_pool(self._dsn, self._config, self._base)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                self._positions = await self._load_positions(conn)
                if "critical_worklist" in self._chosen:
                    rows = await conn.fetch("SELECT patient, result_key FROM critical_worklist")
                    self._on_worklist.clear()
                    self._on_worklist.update((r["patient"], r["result_key"]) for r in rows)
            if self._state != "following":
                _log.info("projections.following", positions=self._positions)
            self._state = "following"
            async with anyio.create_task_group() as tg:
                if self._critical is not None and not until_caught_up:
                    tg.start_soon(self._critical.run, pool, lambda: self._positions.get("critical_worklist", 0))
                await self._follow(pool, until_caught_up)
                tg.cancel_scope.cancel()
        finally:
            pool.terminate()  # never waits on a database that may be gone; open transactions roll back

    async def _load_positions(self, conn: Connection) -> dict[str, int]:
        rows = await conn.fetch(
            "SELECT name, lsn FROM projection_positions WHERE name = ANY($1::text[])", list(self._chosen)
        )
        return {r["name"]: int(r["lsn"]) for r in rows}

    async def _follow(self, pool: asyncpg.Pool[asyncpg.Record], until_caught_up: bool) -> None:
        send, receive = anyio.create_memory_object_stream[_Batch](1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._produce, pool, dict(self._positions), send, until_caught_up)
            async with receive:
                async for batch in receive:
                    async with pool.acquire() as conn:
                        await self._write(conn, batch)
                    self._committed(batch)

    async def _produce(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        positions: dict[str, int],
        send: MemoryObjectSendStream[_Batch],
        once: bool,
    ) -> None:
        """Read and fold the next batch while the previous one is being written."""
        async with send:
            while True:
                start = min(positions.values()) + 1
                if start > self._reader.last_lsn:
                    assert self._more is not None
                    if once:
                        return
                    self._more = anyio.Event()
                    if start > self._reader.last_lsn:
                        with anyio.move_on_after(0.5) as idle:  # the log may grow without a notify
                            await self._more.wait()
                        if idle.cancelled_caught and positions == self._positions:
                            await self._check_positions(pool)
                    continue
                batch = await self._build(start, positions)
                if batch is None:
                    await anyio.sleep(0.01)  # the log said more, the read found none yet
                    continue
                await send.send(batch)
                positions = batch.new

    async def _build(self, start: int, positions: dict[str, int]) -> _Batch | None:
        """The next batch, read and folded in slices on the event loop.

        Slices, not a worker thread: a thread would hold the GIL for whole
        batches and the node's event loop (the ACK path) would get it back
        only every switch interval; a slice of a few milliseconds, then the
        loop runs, and the database works on the previous batch meanwhile.
        """
        records: list[Record] = []
        changes = Changes(TABLES)
        limit = self._config.batch_records_max
        while len(records) < limit:
            began = monotonic()
            chunk = self._read(start + len(records), min(_SLICE_RECORDS, limit - len(records)))
            if not chunk:
                break
            build_changes(chunk, positions, self._chosen, into=changes)
            records += chunk
            await self._yield(monotonic() - began)
        if not records:
            return None
        steps: list[Step] = []
        for step in plan(changes):
            steps.append(step)
            await anyio.lowlevel.checkpoint()
        new = {name: max(lsn, records[-1].lsn) for name, lsn in positions.items()}
        return _Batch(records, steps, changes.issues, dict(positions), new)

    async def _yield(self, spent_s: float) -> None:
        """Between slices: while the node has messages in flight, pause as long as the slice took.

        So the read side takes at most half of a busy node's event loop
        (catching up when it is idle), and the ACK path comes first.
        """
        if self._busy():
            await anyio.sleep(spent_s)
        else:
            await anyio.lowlevel.checkpoint()

    async def _check_positions(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        """While idle: a rebuild may have reset a projection, which no write of ours would notice."""
        async with pool.acquire() as conn:
            stored = await self._load_positions(conn)
        if stored != self._positions:
            raise PositionMovedError(f"stored positions {stored} are not the runner's {self._positions}")

    def _read(self, start: int, limit: int) -> list[Record]:
        """Up to `limit` records from `start`, on one cursor kept between calls."""
        if self._cursor is None or self._cursor_next != start:
            self._cursor = self._reader.read_from(start, decode_events)
        records: list[Record] = []
        for log_record in self._cursor:
            records.append(record_of(log_record))
            if len(records) >= limit:
                break
        else:
            self._cursor = None  # the cursor saw the log's end as it was: a new one sees more
        self._cursor_next = records[-1].lsn + 1 if records else start
        return records

    async def _write(self, conn: Connection, batch: _Batch) -> None:
        try:
            await write_changes(
                conn, batch.steps, batch.issues, expected=batch.expected, new=batch.new, schema=self._config.schema
            )
        except REFUSED_DATA_ERRORS:
            await self._write_each(conn, batch)
        else:
            self._issues += len(batch.issues)

    async def _write_each(self, conn: Connection, batch: _Batch) -> None:
        """The database refused the batch: apply it record by record, noting (and passing) a refused one."""
        positions = dict(batch.expected)
        for record in batch.records:
            new = {name: max(lsn, record.lsn) for name, lsn in positions.items()}
            changes = build_changes([record], positions, self._chosen)
            try:
                await write_changes(
                    conn, list(plan(changes)), changes.issues, expected=positions, new=new, schema=self._config.schema
                )
                self._issues += len(changes.issues)
            except REFUSED_DATA_ERRORS as exc:
                _log.warning("projections.record_refused", lsn=record.lsn, sqlstate=exc.sqlstate)
                reason = f"the database refused the record's rows: SQLSTATE {exc.sqlstate}"
                refused = [Issue("*", record.lsn, 0, "record", "", reason)]
                await write_changes(conn, [], refused, expected=positions, new=new, schema=self._config.schema)
                self._issues += 1
            positions = new

    def _committed(self, batch: _Batch) -> None:
        self._positions = dict(batch.new)
        self._batches += 1
        self._applied += len(batch.records)
        applied, now = min(batch.new.values()), self._clock()
        while self._pending and self._pending[0][0] <= applied:
            _lsn, at = self._pending.popleft()
            self._visible.record_value(max(1, int((now - at) * 1_000_000)))
