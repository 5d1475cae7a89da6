"""The write-ahead log: durable before acknowledged, group-committed, crash-safe.

`open_wal` recovers the log (truncating a torn tail, refusing corruption),
starts the writer task, and yields a `WriteAheadLog`. `append` returns only
when the records are on disk: the writer gathers whatever appends are waiting
into one write and one fdatasync (group commit). A group of batch-lane records
only may wait `commit_delay_ms` for company; a group with any critical or
standard record is written at once, so a critical record never waits for a
batch window.

Failure semantics, after what storage engines learned the hard way:
- an fsync (or other I/O) error stops the log for good: every waiting and
  later append fails with `WALFailedError`; no retry on the same file, since
  the kernel may already have dropped the unwritten pages;
- a full disk refuses the group (`DiskFullError`, retryable), truncates any
  partial write, and keeps the log open: reads work and appends resume when
  there is space again;
- a redelivered message (same message id) is not appended twice: `append`
  answers with the LSN it already has (invariant 4).
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import os
from array import array
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import final

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from engine.config import WalConfig
from engine.model import Envelope, Lane
from engine.wal.audit import AuditTrail
from engine.wal.base import Base, BaseStore
from engine.wal.checkpoint import Checkpoint, CheckpointStore
from engine.wal.errors import DiskFullError, WALCorruptError, WALError, WALFailedError, WALLockedError
from engine.wal.files import FileLayer, OSFiles
from engine.wal.index import IndexSnapshot, IndexStore
from engine.wal.record import (
    FRAME,
    SEGMENT_MAGIC,
    LogRecord,
    RecordHead,
    body_hash,
    decode_record,
    encode_frame,
    read_frame,
)
from engine.wal.scan import Resume, ScanResult, SegmentInfo, released_segments, scan_log, segment_name

__all__ = ["Position", "WALStatistics", "WriteAheadLog", "open_wal"]

_log = structlog.get_logger("vigil.wal")
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_SEGMENT_BITS = 40  # patient index entries pack (segment << 40 | offset)
_Pending = tuple[int, str, tuple[str, ...]]  # a framed record: LSN, message id, patients


def utc_now() -> str:
    """The log's clock: ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


@final
class Position(msgspec.Struct, frozen=True):
    """Where an appended message is: its LSN, and whether it was already there."""

    lsn: int
    duplicate: bool = False


@final
class WALStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the log's counters."""

    last_lsn: int
    segments: int
    appended_records: int
    duplicate_records: int
    groups: int
    queued_appends: int
    disk_full_refusals: int
    failed: str | None


@final
class _Append:
    """One caller's append, waiting for its group's fsync."""

    __slots__ = ("critical", "done", "envelopes", "epoch", "error", "partition", "patients", "positions", "urgent")

    def __init__(self, envelopes: Sequence[Envelope], partition: int, epoch: int, done: anyio.Event) -> None:
        self.envelopes = envelopes
        self.partition = partition
        self.epoch = epoch
        self.done = done
        self.positions: list[Position] = []
        self.error: BaseException | None = None
        # Only an all-batch append may wait for company before its fsync.
        self.urgent = self.critical = False
        self.patients: set[str] = set()
        for e in envelopes:
            if e.lane is not Lane.BATCH:
                self.urgent = True
                self.critical = self.critical or e.lane is Lane.CRITICAL
            if e.patient:
                self.patients.add(e.patient)
            self.patients.update(e.other_patients)


@final
class _Framed:
    """A group framed and chained, on its way to the syncer."""

    __slots__ = ("data", "generation", "group", "hashes", "offsets", "pending")

    def __init__(
        self,
        group: list[_Append],
        *,
        data: bytes,
        offsets: list[int],
        hashes: list[bytes],
        pending: list[_Pending],
        generation: int,
    ) -> None:
        self.group = group
        self.data = data
        self.offsets = offsets
        self.hashes = hashes
        self.pending = pending
        self.generation = generation


@final
class WriteAheadLog:
    """A log directory opened for appending; build with `open_wal`."""

    def __init__(
        self,
        directory: Path,
        config: WalConfig,
        files: FileLayer,
        *,
        clock: Callable[[], str],
        tail_window_bytes: int,
        audit_key: bytes | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self._files = files
        self._clock = clock
        self._tail_window = tail_window_bytes
        self._segments: list[SegmentInfo] = []
        self._firsts: list[int] = []  # first LSN of each segment, for bisect
        self._ids: dict[str, int] = {}
        self._patients: dict[str, array[int]] = {}
        self._last_lsn = 0
        self._last_hash = b""
        self._handle: int | None = None
        self._failure: WALFailedError | None = None
        self._checkpoints = CheckpointStore(directory, files)
        self._indexes = IndexStore(directory, files)
        self._audit = AuditTrail(directory, files, audit_key) if audit_key else None
        self._checkpoint_lsn = 0
        self._checkpointing = False
        # The tip: the last record framed (it may still be in flight); the
        # syncer moves the durable end (`_last_lsn`) behind it.
        self._tip_lsn = 0
        self._tip_hash = b""
        self._inflight: dict[str, int] = {}
        # Segments released since open: patient index entries count segments
        # from the first one of this run, so they are offset by this.
        self._released = 0
        self._first_lsn = 1
        self._generation = 0
        # anyio.Event() looks the backend up on every call; an append makes one
        # each, so the backend's own Event class is resolved once, at open.
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        self._send, self._receive = anyio.create_memory_object_stream[_Append](config.queue_appends_max)
        self._appended = self._duplicates = self._groups = self._disk_full = 0

    # -- recovery -----------------------------------------------------------

    def recover(self) -> None:
        """Scan the log, rebuild the indexes, truncate a torn tail; refuse corruption.

        With a saved index that matches the log, only the records after it are
        scanned (CRCs and chain verified from there on).
        """
        checkpoint = self._checkpoints.load()
        saved = self._indexes.load()
        if saved is not None and (checkpoint is None or saved.lsn > checkpoint.lsn):
            _log.warning("wal.index_ignored", reason="newer than the checkpoint")
            saved = None
        resume = self._restore(saved) if saved is not None else None
        watch = frozenset({checkpoint.lsn}) if checkpoint and resume else frozenset()
        result = scan_log(
            self.directory,
            self._files,
            chain_from_lsn=checkpoint.lsn if checkpoint and not resume else 0,
            chain_from_hash=checkpoint.hash if checkpoint and not resume else None,
            visit=self._index,
            sparse_every=self.config.sparse_index_records_interval,
            tail_window_bytes=self._tail_window,
            watch=watch,
            resume=resume,
        )
        if (
            checkpoint
            and resume
            and checkpoint.lsn > resume.lsn
            and result.hashes.get(checkpoint.lsn) != checkpoint.hash
        ):
            raise WALCorruptError(
                f"record {checkpoint.lsn} does not match the checkpoint's hash", result.segments[-1].name, 0
            )
        # The saved index describes this moment only: once appends go on it is stale.
        self._indexes.remove()
        self._adopt(result, checkpoint.lsn if checkpoint else 0)

    def _restore(self, saved: IndexSnapshot) -> Resume:
        """Load a saved index into memory; return where scanning resumes."""
        segments = []
        for name, first, last, size, sparse in saved.segments:
            seg = SegmentInfo(self.directory / name, first)
            seg.last_lsn, seg.size, seg.sparse = last, size, [tuple(p) for p in sparse]  # type: ignore[misc]
            segments.append(seg)
        self._ids = dict(saved.ids)
        self._patients = {key: array("q", packed) for key, packed in saved.patients.items()}
        return Resume(segments, saved.lsn, saved.hash)

    def _adopt(self, result: ScanResult, checkpoint_lsn: int) -> None:
        """Take the scan's view as the log's state; repair a torn tail; make the tail durable."""
        self._segments = result.segments
        self._firsts = [s.first_lsn for s in self._segments]
        self._first_lsn = result.first_lsn
        for name in released_segments(self.directory, self._files):
            self._files.remove(self.directory / name)  # a release a crash interrupted
        self._last_lsn = self._tip_lsn = result.last_lsn
        self._last_hash = self._tip_hash = result.last_hash
        self._checkpoint_lsn = checkpoint_lsn
        if result.tail is not None:
            tail = result.tail
            _log.warning(
                "wal.torn_tail_truncated",
                segment=tail.segment,
                offset=tail.offset,
                bytes=tail.size,
                reason=tail.reason,
            )
        if not self._segments:
            self._new_segment(1)
        else:
            seg = self._segments[-1]
            self._handle = self._files.open_append(seg.path)
            if result.tail is not None:
                self._files.truncate(self._handle, seg.size)
                if seg.size == 0:
                    self._files.write(self._handle, SEGMENT_MAGIC)
                    seg.size = len(SEGMENT_MAGIC)
            # After a process crash the tail may still be only in the page cache:
            # make what recovery read durable before it is served or answered
            # as a duplicate, or a later power cut could take back an ACK.
            self._files.sync(self._handle)
            self._files.sync_dir(self.directory)
        _log.info("wal.opened", last_lsn=self._last_lsn, segments=len(self._segments), hashed=result.hashed_records)

    def save_index(self) -> None:
        """Save the indexes for a fast next start (at a clean stop, after the checkpoint)."""
        if self._failure is not None or self._last_lsn != self._checkpoint_lsn:
            return
        snapshot = IndexSnapshot(
            self._last_lsn,
            self._last_hash,
            [(s.name, s.first_lsn, s.last_lsn, s.size, s.sparse) for s in self._segments],
            self._ids,
            {key: positions.tobytes() for key, positions in self._patients.items()},
        )
        try:
            self._indexes.save(snapshot)
        except OSError as exc:
            _log.error("wal.index_save_failed", reason=exc.strerror or str(exc))

    def _index(self, segment: int, offset: int, head: RecordHead) -> None:
        # The recovery visitor: the body of `_add`, inlined (one call less per record).
        self._ids[head.message_id] = head.lsn
        entry = segment << _SEGMENT_BITS | offset
        for key in head.patients:
            positions = self._patients.get(key)
            if positions is None:
                self._patients[key] = positions = array("q")
            positions.append(entry)

    def _add(self, segment: int, offset: int, lsn: int, message_id: str, patients: tuple[str, ...]) -> None:
        self._ids[message_id] = lsn
        entry = segment << _SEGMENT_BITS | offset
        for key in patients:
            positions = self._patients.get(key)
            if positions is None:
                self._patients[key] = positions = array("q")
            positions.append(entry)

    def _new_segment(self, first_lsn: int) -> None:
        """Begin a segment (sealing the current one); a full disk leaves no trace."""
        seg = SegmentInfo(self.directory / segment_name(first_lsn), first_lsn)
        handle = self._files.open_append(seg.path)
        try:
            self._files.truncate(handle, 0)
            self._files.write(handle, SEGMENT_MAGIC)
            self._files.sync(handle)
            self._files.sync_dir(self.directory)
        except OSError as exc:
            self._files.close(handle)
            self._files.remove(seg.path)
            if exc.errno in _DISK_FULL:
                raise DiskFullError(f"no space left to begin a log segment in {self.directory}; retry later") from exc
            raise
        if self._handle is not None:
            self._files.close(self._handle)
        self._handle = handle
        self._segments.append(seg)
        self._firsts.append(first_lsn)

    # -- appending ----------------------------------------------------------

    async def append(self, envelopes: Sequence[Envelope], *, partition: int = 0, epoch: int = 0) -> list[Position]:
        """Append messages; return when they are durable (or were already there).

        Cancelling the caller does not cancel the write: the records may become
        durable without being acknowledged, and a redelivery is then answered
        from the idempotency index.

        Raises:
            DiskFullError: no space for this group; nothing was written; retry later.
            WALFailedError: the log stopped after an I/O error.
        """
        if self._failure is not None:
            raise self._failure
        request = _Append(envelopes, partition, epoch, self._new_event())
        try:
            self._send.send_nowait(request)
        except anyio.WouldBlock:
            await self._send.send(request)  # the queue is full: wait (backpressure)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.positions

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer: gather waiting appends and frame them; the syncer writes and fsyncs.

        The two are pipelined through a one-slot channel: while group N is
        being written and fsync'd (in a worker thread), group N+1 is gathered
        and framed, so the CPU work overlaps the disk wait. Checkpoints run
        beside both (they only shorten recovery).
        """
        task_status.started()
        delay = self.config.commit_delay_ms / 1000
        send_framed, receive_framed = anyio.create_memory_object_stream[_Framed](1)
        async with self._receive, anyio.create_task_group() as tasks:
            tasks.start_soon(self._syncer, receive_framed, tasks)
            async with send_framed:
                async for first in self._receive:
                    group = [first]
                    self._gather(group)
                    if delay and not any(a.urgent for a in group):
                        await self._wait_for_company(group, delay)
                    for part in _critical_first(group):
                        framed = self._frame(part)
                        if framed is not None:
                            await send_framed.send(framed)

    async def _syncer(self, receive: MemoryObjectReceiveStream[_Framed], tasks: TaskGroup) -> None:
        async with receive:
            async for framed in receive:
                with anyio.CancelScope(shield=True):
                    await self._sync(framed)
                due = self._last_lsn - self._checkpoint_lsn >= self.config.checkpoint_records_interval
                if due and not self._checkpointing:
                    self._checkpointing = True
                    tasks.start_soon(self._checkpoint_beside)

    async def _checkpoint_beside(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.checkpoint)
        finally:
            self._checkpointing = False

    def _gather(self, group: list[_Append]) -> None:
        limit = self.config.group_records_max
        count = sum(len(a.envelopes) for a in group)
        while count < limit:
            try:
                more = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return
            group.append(more)
            count += len(more.envelopes)

    async def _wait_for_company(self, group: list[_Append], delay: float) -> None:
        """A batch-only group waits up to `delay` for more, ending early for urgent work."""
        with anyio.move_on_after(delay):
            while sum(len(a.envelopes) for a in group) < self.config.group_records_max:
                try:
                    more = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                group.append(more)
                if more.urgent:
                    return

    def _frame(self, group: list[_Append]) -> _Framed | None:
        """Frame every new record of the group, chained on the tip (framed, maybe not durable yet).

        A duplicate of a durable record is answered at once (if the whole
        group is duplicates); a duplicate of a record still in flight is
        answered with this group, which is synced after the one holding it.
        """
        if self._failure is not None:
            _answer(group, self._failure)
            return None
        frames: list[bytes] = []
        hashes: list[bytes] = []
        offsets: list[int] = []
        pending: list[_Pending] = []
        lsn, prev, size = self._tip_lsn, self._tip_hash, 0
        inflight = self._inflight
        waits_for_flight = False
        now = self._clock()
        for request in group:
            request.positions = []
            for env in request.envelopes:
                known = self._ids.get(env.message_id)
                if known is None:
                    known = inflight.get(env.message_id)
                    waits_for_flight = waits_for_flight or known is not None
                if known is not None:
                    request.positions.append(Position(known, duplicate=True))
                    self._duplicates += 1
                    continue
                lsn += 1
                patients = (env.patient, *env.other_patients) if env.patient else env.other_patients
                record = LogRecord(lsn, now, request.partition, request.epoch, env.message_id, patients, prev, env)
                frame, prev = encode_frame(record)
                frames.append(frame)
                hashes.append(prev)
                offsets.append(size)
                size += len(frame)
                pending.append((lsn, env.message_id, patients))
                inflight[env.message_id] = lsn
                request.positions.append(Position(lsn))
        if not frames and not waits_for_flight:
            _answer(group, None)
            return None
        self._tip_lsn, self._tip_hash = lsn, prev
        return _Framed(
            group, data=b"".join(frames), offsets=offsets, hashes=hashes, pending=pending, generation=self._generation
        )

    async def _sync(self, framed: _Framed) -> None:
        """Write and fsync one framed group (in a worker thread), then answer it."""
        group = framed.group
        if self._failure is not None:
            _answer(group, self._failure)
            return
        if framed.generation != self._generation:
            # Framed on top of a group the disk refused: its LSNs and chain are void.
            _answer(group, DiskFullError("an earlier group was refused for lack of space; retry later"))
            return
        if not framed.data:
            _answer(group, None)
            return
        try:
            start = await anyio.to_thread.run_sync(self._write_group, framed.data, framed.pending[0][0])
        except DiskFullError as exc:
            self._disk_full += 1
            self._rewind()
            _answer(group, exc)
            return
        except OSError as exc:
            self._fail(f"{exc.strerror or exc} while writing the log", exc)
            _answer(group, self._failure)
            return
        self._durable(start, len(framed.data), framed.offsets, framed.hashes, framed.pending)
        for _, message_id, _ in framed.pending:
            self._inflight.pop(message_id, None)
        _answer(group, None)

    def _rewind(self) -> None:
        """Forget every framed-but-unwritten group: the tip goes back to the durable end."""
        self._generation += 1
        self._tip_lsn, self._tip_hash = self._last_lsn, self._last_hash
        self._inflight.clear()

    def _write_group(self, data: bytes, first_lsn: int) -> int:
        """In a worker thread: roll the segment if due, write, fdatasync. Returns the write offset."""
        seg = self._segments[-1]
        if seg.size + len(data) > self.config.segment_bytes_max and seg.last_lsn >= seg.first_lsn:
            self._new_segment(first_lsn)
            seg = self._segments[-1]
        assert self._handle is not None
        start = seg.size
        try:
            self._files.write(self._handle, data)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            # Take back whatever part of the group reached the file; if even
            # that fails, the file's end is unknown and the log must stop.
            self._files.truncate(self._handle, start)
            raise DiskFullError(
                f"no space left for {len(data)} bytes in {self.directory}; nothing was written, retry later"
            ) from exc
        self._files.sync(self._handle)
        return start

    def _durable(self, start: int, size: int, offsets: list[int], hashes: list[bytes], pending: list[_Pending]) -> None:
        seg_index = len(self._segments) - 1 + self._released
        seg = self._segments[-1]
        every = self.config.sparse_index_records_interval
        for (lsn, message_id, patients), offset in zip(pending, offsets, strict=True):
            self._add(seg_index, start + offset, lsn, message_id, patients)
            if (lsn - seg.first_lsn) % every == 0:
                seg.sparse.append((lsn, start + offset))
        last_lsn = pending[-1][0]
        seg.last_lsn = last_lsn
        seg.size = start + size
        self._last_lsn = last_lsn
        self._last_hash = hashes[-1]
        self._appended += len(pending)
        self._groups += 1

    def _fail(self, why: str, exc: BaseException) -> None:
        self._failure = WALFailedError(f"the log stopped: {why}; appends are refused until the node restarts")
        self._failure.__cause__ = exc
        _log.error("wal.failed", reason=why)

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> None:
        """Record the last durable LSN and its hash; recovery verifies the chain from here.

        A checkpoint only shortens recovery: if writing it fails, the log is
        still whole, so the error is logged and the next checkpoint tries again.
        """
        if self._last_lsn in (0, self._checkpoint_lsn) or self._failure is not None:
            return
        lsn, digest, at = self._last_lsn, self._last_hash, utc_now()
        try:
            self._checkpoints.save(Checkpoint(lsn, digest, at))
            if self._audit is not None:
                self._audit.append(lsn, digest, at)
        except OSError as exc:
            _log.error("wal.checkpoint_failed", reason=exc.strerror or str(exc), lsn=lsn)
            return
        self._checkpoint_lsn = lsn

    # -- retention ----------------------------------------------------------

    async def release_segments_before(self, lsn: int) -> int:
        """Delete whole sealed segments whose records are all below `lsn`; return how many.

        For the actors' snapshots: `lsn` is the oldest snapshot still needed.
        Only with `wal.retention = "release-before-snapshot"`: by default a
        medical record keeps everything. The base file is written before any
        deletion, so a crash in between loses nothing the log still needs.

        Raises:
            WALError: retention is keep-all.
        """
        if self.config.retention != "release-before-snapshot":
            raise WALError('retention is "keep-all": no segment is released')
        count = 0
        while count < len(self._segments) - 1 and self._segments[count].last_lsn < lsn:
            count += 1
        if count == 0:
            return 0
        doomed = self._segments[:count]
        kept = self._segments[count]
        base = Base(kept.first_lsn, await anyio.to_thread.run_sync(self._last_hash_of, doomed[-1]))
        await anyio.to_thread.run_sync(BaseStore(self.directory, self._files).save, base)
        del self._segments[:count]
        del self._firsts[:count]
        self._released += count
        self._first_lsn = base.first_lsn

        def delete() -> None:
            for seg in doomed:
                self._files.remove(seg.path)
            self._files.sync_dir(self.directory)

        await anyio.to_thread.run_sync(delete)
        _log.info("wal.segments_released", segments=count, first_lsn=base.first_lsn)
        return count

    def _last_hash_of(self, seg: SegmentInfo) -> bytes:
        """The chain hash of a sealed segment's last record."""
        data = self._files.read(seg.path, 0, seg.size)
        pos, body = _sparse_offset(seg, seg.last_lsn), b""
        while (frame := read_frame(data, pos)) is not None:
            pos, body = frame.end, frame.body
        return body_hash(body)

    @property
    def first_lsn(self) -> int:
        """The first LSN the log still holds (1 unless segments were released)."""
        return self._first_lsn

    # -- reading ------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """The last durable LSN (0 for an empty log)."""
        return self._last_lsn

    def lookup(self, message_id: str) -> int | None:
        """The LSN of a message id, if the log has it."""
        return self._ids.get(message_id)

    def read_from(self, lsn: int = 1) -> Iterator[LogRecord]:
        """Every durable record from `lsn` on, in order."""
        lsn = max(lsn, 1)
        last = self._last_lsn
        if lsn > last:
            return
        index = max(bisect.bisect_right(self._firsts, lsn) - 1, 0)
        for seg in self._segments[index:]:
            if seg.last_lsn < seg.first_lsn:
                continue
            start = _sparse_offset(seg, lsn)
            end = seg.size
            data = self._files.read(seg.path, start, end - start)
            pos = 0
            while pos < len(data):
                length, _ = FRAME.unpack_from(data, pos)
                record = decode_record(data[pos + FRAME.size : pos + FRAME.size + length])
                pos += FRAME.size + length
                if record.lsn > last:
                    return
                if record.lsn >= lsn:
                    yield record

    def read_patient(self, patient: str) -> Iterator[LogRecord]:
        """Every durable record touching one patient, in order, without a scan."""
        for entry in list(self._patients.get(patient, ())):
            ordinal = (entry >> _SEGMENT_BITS) - self._released
            if ordinal < 0:
                continue  # in a released segment
            seg = self._segments[ordinal]
            offset = entry & ((1 << _SEGMENT_BITS) - 1)
            length, _ = FRAME.unpack(self._files.read(seg.path, offset, FRAME.size))
            yield decode_record(self._files.read(seg.path, offset + FRAME.size, length))

    def statistics(self) -> WALStatistics:
        """A snapshot of the counters."""
        return WALStatistics(
            last_lsn=self._last_lsn,
            segments=len(self._segments),
            appended_records=self._appended,
            duplicate_records=self._duplicates,
            groups=self._groups,
            queued_appends=self._send.statistics().current_buffer_used,
            disk_full_refusals=self._disk_full,
            failed=str(self._failure) if self._failure else None,
        )

    def close(self) -> None:
        """Checkpoint and release the segment handle (the writer has stopped)."""
        if self._handle is not None:
            if self._failure is None:
                self.checkpoint()
                self.save_index()
            self._files.close(self._handle)
            self._handle = None


def _sparse_offset(seg: SegmentInfo, lsn: int) -> int:
    i = bisect.bisect_right(seg.sparse, (lsn, 1 << 62)) - 1
    return seg.sparse[i][1] if i >= 0 else len(SEGMENT_MAGIC)


def _critical_first(group: list[_Append]) -> list[list[_Append]]:
    """Split out critical appends to be made durable first, in their own write and fsync.

    A critical append moves ahead only if no earlier append in the group
    touches one of its patients: lanes choose what is durable first, but
    never reorder one patient's history (a correction stays after its original).
    """
    if len(group) == 1 or not any(a.critical for a in group):
        return [group]
    first: list[_Append] = []
    rest: list[_Append] = []
    held: set[str] = set()
    for request in group:
        if request.critical and not (request.patients & held):
            first.append(request)
        else:
            rest.append(request)
            held |= request.patients
    return [part for part in (first, rest) if part]


def _answer(group: list[_Append], error: BaseException | None) -> None:
    for request in group:
        request.error = error
        request.done.set()


@asynccontextmanager
async def open_wal(
    directory: Path,
    config: WalConfig | None = None,
    *,
    files: FileLayer | None = None,
    clock: Callable[[], str] = utc_now,
    tail_window_bytes: int | None = None,
    audit_key: bytes | None = None,
) -> AsyncIterator[WriteAheadLog]:
    """Open (creating or recovering) a log directory and run its writer.

    Raises:
        WALLockedError: another process has this log open.
        WALCorruptError: the log is damaged before its tail.
    """
    config = config if config is not None else WalConfig()
    files = files if files is not None else OSFiles()
    await anyio.to_thread.run_sync(files.list, directory)  # creates the directory
    window = tail_window_bytes if tail_window_bytes is not None else config.group_bytes_max + 64 * 1024 * 1024
    with _exclusive_lock(directory):
        wal = WriteAheadLog(directory, config, files, clock=clock, tail_window_bytes=window, audit_key=audit_key)
        try:
            await anyio.to_thread.run_sync(wal.recover)
        except BaseException:
            wal._send.close()
            wal._receive.close()
            raise
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(wal.run)
                wal._new_event = type(anyio.Event())
                try:
                    yield wal
                finally:
                    # Let the writer finish what is queued, then stop it.
                    await wal._send.aclose()
        finally:
            await anyio.to_thread.run_sync(wal.close)


class _exclusive_lock:  # noqa: N801 -- used as a context manager, named like one
    """An flock on `LOCK` in the log directory: one process per log."""

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

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
