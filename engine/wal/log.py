"""The write-ahead log: durable before acknowledged, group-committed, crash-safe.

`open_wal` recovers the log (truncating a torn tail, refusing corruption),
starts the writer, and yields a `WriteAheadLog`. `append` returns only when
the records are on disk: the writer gathers whatever appends are waiting
into one write and one fdatasync (group commit). A group of batch-lane records
only may wait `commit_delay_ms` for company (if the group before it had
some: a lone sender never waits); a group with any critical or
standard record is written at once, so a critical record never waits for a
batch window, and critical appends are made durable ahead of the rest of
their group.

Failure semantics, after what storage engines learned the hard way:
- an fsync (or other I/O) error stops the log for good: every waiting and
  later append fails with `WALFailedError`; no retry on the same file, since
  the kernel may already have dropped the unwritten pages;
- a full disk refuses the group (`DiskFullError`, retryable), takes back any
  partial write, and keeps the log open: reads work and appends resume when
  there is space again;
- a redelivered message (same message id) is not appended twice: `append`
  answers with the LSN it already has (invariant 4).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, final, overload

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from engine.core.model import Envelope
from engine.infra.clock import utc_now
from engine.infra.config import WalConfig
from engine.wal.base import Base, BaseStore
from engine.wal.checkpoint import Checkpoint, CheckpointStore
from engine.wal.copy import LogCut
from engine.wal.errors import DiskFullError, WALCorruptError, WALFailedError
from engine.wal.files import FileLayer, OSFiles
from engine.wal.group import Append, Framed, Pending, Position, answer, critical_first
from engine.wal.index import IndexStore, LogIndex, sparse_offset
from engine.wal.keyed_checkpoints import KeyedCheckpoints
from engine.wal.lock import DirectoryLock
from engine.wal.record import LogRecord, body_hash, decode_record, encode_frame, read_frame
from engine.wal.scan import Progress, ScanResult, SegmentInfo, released_segments, scan_log
from engine.wal.segment_file import ActiveSegment
from engine.wal.segment_reads import SegmentReads

__all__ = ["Durable", "Position", "SegmentFile", "WALStatistics", "WriteAheadLog", "open_wal", "utc_now"]

_log = structlog.get_logger("vigil.wal")


_READ_WINDOW_BYTES = 1024 * 1024  # what read_from reads at a time (a record longer than this is read whole)
# An urgent append this long after the last one its caller wrote may be written by its own caller too:
# slower than that, they come one at a time (a fsync here is about 0.1 ms); faster, grouping pays.
_ALONE_S = 0.001
_AFTER_THE_NEXT_LOOK_S = 1e-6  # a timer this short is due at the loop's next turn, after its socket events
_RECORD_READ_BYTES = 4096  # a patient read asks this much first: most records are smaller


class _HasLsn(Protocol):
    @property
    def lsn(self) -> int: ...


_Decoded = TypeVar("_Decoded", bound=_HasLsn)


# A record just made durable: partition, epoch, LSN, time recorded, envelope.
Durable = tuple[int, int, int, str, Envelope]


def _durable(group: list[Append]) -> list[Durable]:
    """The new records of a synced group, in LSN order (duplicates left out)."""
    return [
        (request.partition, request.epoch, position.lsn, position.recorded_at or "", env)
        for request in group
        for env, position in zip(request.envelopes, request.positions, strict=True)
        if not position.duplicate
    ]


@final
class SegmentFile(msgspec.Struct, frozen=True):
    """A sealed segment: its file, its LSN range and its valid length (what retention reads)."""

    path: Path
    first_lsn: int
    last_lsn: int
    size: int


@final
class WALStatistics(msgspec.Struct, frozen=True):
    """A snapshot of the log's counters."""

    last_lsn: int
    segments: int
    appended_records: int
    duplicate_records: int
    reused_control_ids: int
    groups: int
    queued_appends: int
    disk_full_refusals: int
    failed: str | None
    direct_commits: int = 0  # urgent appends written and fsync'd by their own caller


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
        self._reads = SegmentReads(files)  # record reads open no file
        self._clock = clock
        self._tail_window = tail_window_bytes
        self._index = LogIndex(config.sparse_index_records_interval)
        self._active = ActiveSegment(directory, files)
        self._checkpoints = CheckpointStore(directory, files)
        self._saved_index = IndexStore(directory, files)
        self._audit = KeyedCheckpoints(directory, files, audit_key) if audit_key else None
        self._failure: WALFailedError | None = None
        self._first_lsn = 1
        # The durable end (what a reader may see) and the tip (the last record
        # framed, maybe still in flight); a commit moves the first up to the second.
        self._last_lsn = self._tip_lsn = 0
        self._last_hash = self._tip_hash = b""
        self._inflight: dict[tuple[str, int], int] = {}  # (message id, digest) framed, not yet durable
        self._inflight_ids: dict[str, int] = {}  # their ids and each one's first LSN: a reused id within a group
        self._checkpoint_lsn = 0
        self._checkpointing = False
        # anyio.Event() looks the backend up on every call; an append makes one
        # each, so the backend's own Event class is resolved once, at open.
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        # Appends waiting for the writer. A deque and two events, not a memory
        # stream: a stream's checkpoints cost the writer two more task switches
        # per group, measured as a tenth of an unloaded append's time.
        self._queue: deque[Append] = deque()
        self._urgent_queued = 0  # critical or standard appends in the queue (taken ahead of batch ones)
        self._overtook = False  # the last group was urgent appends taken ahead of a queued batch one
        self._wake = anyio.Event()  # set by an append (or the close) while the writer is idle
        self._idle = False
        self._with_writer = 0  # appends queued, held or answered by the writer whose callers have not resumed
        self._urgent_company = False  # the last urgent group held more than one append
        self._direct = 0  # urgent appends committed by their caller (`_commit_now`)
        self._last_direct = 0.0  # when the last of them was (monotonic seconds)
        self._room: anyio.Event | None = None  # made when an append waits for room in the queue
        self._closing = False
        self._company = False  # the last group held more than one append (so a batch group may wait for more)
        self._synced_company = False  # the last group synced held more than one record (`_in_a_thread`)
        self._appended = self._duplicates = self._groups = self._disk_full = self._reused = 0
        # Told of every group's new records once durable, in LSN order, by the writer (replication).
        self.on_durable: Callable[[list[Durable]], None] | None = None
        # Told of each message stored under an id the log holds with other content (a metric).
        self.on_control_id_reused: Callable[[], None] | None = None
        self._copies = 0  # consistent copies under way (`cut`): no segment is released meanwhile

    # -- recovery -----------------------------------------------------------

    def recover(self, progress: Progress | None = None) -> None:
        """Scan the log, rebuild the indexes, truncate a torn tail; refuse corruption.

        With indexes saved at the last clean stop, only the records after them
        are decoded; every CRC of the prefix is still checked.
        """
        checkpoint = self._checkpoints.load()
        saved = self._saved_index.load()
        if saved is not None and (checkpoint is None or saved.lsn > checkpoint.lsn):
            _log.warning("wal.index_ignored", reason="newer than the checkpoint")
            saved = None
        resume = self._index.restore(self.directory, saved) if saved is not None else None
        result = scan_log(
            self.directory,
            self._files,
            chain_from_lsn=checkpoint.lsn if checkpoint and not resume else 0,
            chain_from_hash=checkpoint.hash if checkpoint and not resume else None,
            visit=self._index.visit,
            sparse_every=self.config.sparse_index_records_interval,
            tail_window_bytes=self._tail_window,
            watch=frozenset({checkpoint.lsn}) if checkpoint and resume else frozenset(),
            resume=resume,
            progress=progress,
        )
        if (
            checkpoint
            and resume
            and checkpoint.lsn > resume.lsn
            and result.hashes.get(checkpoint.lsn) != checkpoint.hash
        ):
            raise WALCorruptError(f"record {checkpoint.lsn} does not match the checkpoint's hash", "checkpoint", 0)
        # Saved indexes describe one moment: once appends go on they are stale.
        self._saved_index.remove()
        self._adopt(result, checkpoint.lsn if checkpoint else 0)

    def _adopt(self, result: ScanResult, checkpoint_lsn: int) -> None:
        """Take the scan's view as the log's state; repair a torn tail; make the tail durable."""
        self._index.adopt(result.segments)
        self._first_lsn = result.first_lsn
        for name in released_segments(self.directory, self._files):
            self._files.remove(self.directory / name)  # a release a crash interrupted
        self._last_lsn = self._tip_lsn = result.last_lsn
        self._last_hash = self._tip_hash = result.last_hash
        self._checkpoint_lsn = checkpoint_lsn
        tail = result.tail
        if tail is not None:
            _log.warning(
                "wal.torn_tail_truncated", segment=tail.segment, offset=tail.offset, bytes=tail.size, reason=tail.reason
            )
        if result.segments:
            self._active.reopen(result.segments[-1], truncate=tail is not None)
        else:
            self._index.add_segment(self._active.begin(1))
        _log.info("wal.opened", last_lsn=self._last_lsn, segments=len(result.segments), hashed=result.hashed_records)

    # -- appending ----------------------------------------------------------

    async def append(self, envelopes: Sequence[Envelope], *, partition: int = 0, epoch: int = 0) -> list[Position]:
        """Append messages; return when they are durable (or were already there).

        Cancelling the caller does not cancel the write: the records may become
        durable without being acknowledged, and a redelivery is then answered
        from the idempotency index.

        Raises:
            DiskFullError: no space for this group; nothing was written; retry later.
            WALFailedError: the log stopped after an I/O error, or is closing.
        """
        request = Append(envelopes, partition, epoch, self._new_event())
        if self._may_commit_now(request):
            self._commit_now(request)
        else:
            await self._queued(request)
        if request.error is not None:
            raise request.error
        return request.positions

    def _may_commit_now(self, request: Append) -> bool:
        """An urgent message the caller may write and fsync itself, with no hand-off to the writer and back.

        Each hand-off is a turn of the event loop, and under a flood a turn
        is every ready task's work: a critical ACK waited two turns for the
        writer. Only when the writer is idle with nothing queued or held
        (nothing to keep in order, nothing to group with, and every append it
        answered has been taken back by its caller: a caller hands its records
        to their patients' actors as it resumes, in log order, and a direct
        commit's caller must not hand on a later record first), the write may run
        on the loop's thread (`sync` is not "thread": a lone message leaves the
        loop nothing to parse during its fsync), and urgent appends are
        coming one at a time: one message (an input's group goes to the
        writer, to share its fsync with the input's other lanes), the last
        one came over `_ALONE_S` ago and the writer's last urgent group had
        no company (several at once still go to the writer together: one
        fsync for all of them).
        """
        return (
            request.urgent
            and len(request.envelopes) == 1
            and time.monotonic() - self._last_direct > _ALONE_S
            and self._idle
            and not self._with_writer
            and not self._urgent_company
            and self.config.sync != "thread"
            and self._failure is None
            and not self._closing
        )

    def _commit_now(self, request: Append) -> None:
        """Frame, write and fsync one urgent append in the caller's task (the writer is idle)."""
        self._direct += 1
        self._last_direct = time.monotonic()
        self._company = False
        framed = self._frame([request])
        if framed is not None:
            self._commit_framed(framed)
        if self._checkpoint_due():
            self._wake_writer()  # it starts the checkpoint beside

    async def _queued(self, request: Append) -> None:
        """The writer's way: queued (waiting for room, backpressure), grouped, answered."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self._closing:
                raise WALFailedError("the log is closing; appends are refused")
            if len(self._queue) < self.config.queue_appends_max:
                break
            if self._room is None:
                self._room = self._new_event()
            await self._room.wait()  # the queue is full: wait (backpressure)
        self._queue.append(request)
        self._urgent_queued += request.urgent
        self._wake_writer()
        self._with_writer += 1
        try:
            await request.done.wait()
        finally:
            self._with_writer -= 1

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer: gather waiting appends into a group, frame it, write and fsync it, answer it.

        Where a group's write and fsync run is `_in_a_thread`'s choice: a
        hop to a worker thread and back costs more CPU than a local fsync
        (benchmarks/bench_wal.py), but while it runs the loop parses the
        next messages, which then share one fsync. A lone urgent message
        is written by its own caller (`_may_commit_now`), not by this task.
        Checkpoints run beside, in a worker thread (they only shorten recovery).
        """
        task_status.started()
        delay = self.config.commit_delay_ms / 1000
        async with anyio.create_task_group() as tasks:
            while True:
                if self._checkpoint_due():
                    self._checkpointing = True
                    tasks.start_soon(self._checkpoint_beside)
                group = self._take()
                if not group:
                    if self._closing:
                        return
                    await self._until_queued()
                    continue
                # Like PostgreSQL's commit_siblings: a batch-only group waits for company
                # only if the group before it had some; a lone sender (one append at a
                # time, each waiting for its answer) would only wait out the delay.
                if delay and self._company and not any(a.urgent for a in group):
                    await self._wait_for_company(group, delay)
                self._company = len(group) > 1
                urgent = sum(a.urgent for a in group)
                if urgent:
                    self._urgent_company = urgent > 1
                await self._commit_group(group)
                if not urgent and self._queue:
                    # Group after group, the writer held the loop for 3-5 ms under a billing flood;
                    # after a batch group it lets the loop look at its sockets (a critical
                    # message that arrived meanwhile is taken next, ahead of batch).
                    await anyio.sleep(_AFTER_THE_NEXT_LOOK_S)

    def _checkpoint_due(self) -> bool:
        due = self._last_lsn - self._checkpoint_lsn >= self.config.checkpoint_records_interval
        return due and not self._checkpointing

    async def _commit_group(self, group: list[Append]) -> None:
        # A method of its own: its frames (a large message's is megabytes) go with it, not
        # kept alive by the writer's loop while it waits for the next append.
        for part in critical_first(group):
            framed = self._frame(part)
            if framed is not None:
                await self._commit(framed)

    def stop_writer(self) -> None:
        """Take no more appends; the writer commits what is queued, then returns."""
        self._closing = True
        self._wake_writer()
        if self._room is not None:
            self._room.set()  # waiters for room see the log closing

    def _wake_writer(self) -> None:
        if self._idle:
            self._idle = False
            self._wake.set()

    async def _until_queued(self) -> None:
        """Sleep until an append (or the close) wakes the writer."""
        self._idle = True
        self._wake = self._new_event()
        try:
            await self._wake.wait()
        finally:
            self._idle = False

    def _take(self, group: list[Append] | None = None) -> list[Append]:
        """Move waiting appends into a group: urgent ones first, else in order, within the group bounds.

        A group holds at most `group_records_max` records and `group_bytes_max`
        bytes of messages (one larger append is written alone), and at most
        `batch_group_records_max` batch-lane records: its framing, write and
        fsync are what an urgent append arriving meanwhile waits for.

        Urgent appends overtake a queued batch one for one group, not group
        after group: with the fsync in a thread, urgent appends from 32
        connections arrived during every fsync, and a billing message waited
        400 ms for its ACK. The group after an overtaking one takes the queue
        in order; its critical appends are still made durable first
        (`critical_first`).
        """
        group = [] if group is None else group
        overtaking = not group and self._urgent_queued and not self._queue[0].urgent
        if overtaking and not self._overtook:
            group = self._urgent_ahead()
            if group:  # on their own: no batch record's framing in front of them
                self._overtook = True
                self._make_room()
                return group
        self._overtook = False
        queue = self._queue
        count = sum(len(a.envelopes) for a in group)
        batch = sum(len(a.envelopes) for a in group if not a.urgent)
        size = sum(a.size for a in group)
        limit, batch_limit = self.config.group_records_max, self.config.batch_group_records_max
        while queue and count < limit and (queue[0].urgent or batch < batch_limit):
            if group and size + queue[0].size > self.config.group_bytes_max:
                break  # a larger one is written alone
            more = queue.popleft()
            group.append(more)
            count += len(more.envelopes)
            size += more.size
            if more.urgent:
                self._urgent_queued -= 1
            else:
                batch += len(more.envelopes)
        self._make_room()
        return group

    def _make_room(self) -> None:
        """Wake the appends waiting for room, if there is room now."""
        if self._room is not None and len(self._queue) < self.config.queue_appends_max:
            self._room.set()
            self._room = None

    def _urgent_ahead(self) -> list[Append]:
        """The urgent appends queued behind batch ones that may be written before them.

        One may go ahead unless an append queued before it touches one of its
        patients *from the same source* (a connection, a file, a subject):
        the lanes choose what is durable first, never the order in which one
        source sent one patient's messages. Between independent sources no
        order exists to keep (the network's timing made it), so a critical
        result from the lab's connection does not wait for the billing file's
        queued records of its patient.
        """
        ahead: list[Append] = []
        behind: deque[Append] = deque()
        held: set[tuple[str, str]] = set()
        for request in self._queue:
            keys = request.sent_by_source()
            if request.urgent and not (keys & held):
                ahead.append(request)
            else:
                behind.append(request)
                held |= keys
        self._queue = behind
        self._urgent_queued -= len(ahead)
        return ahead

    async def _wait_for_company(self, group: list[Append], delay: float) -> None:
        """A batch-only group waits up to `delay` for more, ending early for urgent work."""
        limit = self.config.batch_group_records_max
        with anyio.move_on_after(delay):
            while sum(len(a.envelopes) for a in group) < limit:
                before = len(group)
                self._take(group)
                if any(a.urgent for a in group[before:]) or self._closing:
                    return
                if len(group) == before:
                    await self._until_queued()

    def _frame(self, group: list[Append]) -> Framed | None:
        """Frame every new record of the group, chained on the tip.

        A duplicate of a durable record is answered at once (if the whole
        group is duplicates); a duplicate of a record still in flight (in the
        critical part committed just before) is answered with this group.
        """
        if self._failure is not None:
            answer(group, self._failure)
            return None
        frames: list[bytes] = []
        hashes: list[bytes] = []
        offsets: list[int] = []
        pending: list[Pending] = []
        lsn, prev, size = self._tip_lsn, self._tip_hash, 0
        lookup, inflight = self._index.lookup, self._inflight
        waits_for_flight = False
        now = self._clock()
        for request in group:
            request.positions = []
            for env in request.envelopes:
                message_id, digest = env.message_id, env.digest
                known = lookup(message_id, digest)
                if known is None:
                    known = inflight.get((message_id, digest))
                    waits_for_flight = waits_for_flight or known is not None
                if known is not None:
                    request.positions.append(Position(known, duplicate=True))
                    self._duplicates += 1
                    continue
                lsn += 1
                if message_id in self._inflight_ids or self._index.holds_id(message_id):
                    self._control_id_reused(message_id, lsn)
                self._inflight_ids.setdefault(message_id, lsn)
                others = env.other_patients
                patients = ((env.patient, *others) if others else (env.patient,)) if env.patient else others
                record = LogRecord(
                    lsn, now, request.partition, request.epoch, env.message_id, patients, prev, env, env.digest
                )
                frame, prev = encode_frame(record)
                frames.append(frame)
                hashes.append(prev)
                offsets.append(size)
                size += len(frame)
                pending.append((lsn, message_id, digest, patients))
                inflight[message_id, digest] = lsn
                request.positions.append(Position(lsn, recorded_at=now))
        if not frames and not waits_for_flight:
            answer(group, None)
            return None
        self._tip_lsn, self._tip_hash = lsn, prev
        data = b"".join(frames)
        return Framed(group, data=data, offsets=offsets, hashes=hashes, pending=pending)

    def _control_id_reused(self, message_id: str, lsn: int) -> None:
        """Other content under an id the log holds: stored as the new message it is, and said."""
        self._reused += 1
        if self.on_control_id_reused is not None:
            self.on_control_id_reused()
        _log.warning(
            "wal.control_id_reused",
            message_id=message_id,
            lsn=lsn,
            first_lsn=self._index.lookup(message_id) or self._inflight_ids.get(message_id),
            reason="an earlier message has this id and other content; both are kept",
        )

    async def _commit(self, framed: Framed) -> None:
        """Write and fsync one framed group (`_in_a_thread` says on which thread), then answer it."""
        # `_in_a_thread` last: it notes this group's company, and a group with nothing to sync has none.
        if self._failure is not None or not framed.data or not self._in_a_thread(framed.group):
            self._commit_framed(framed)
            return
        try:
            with anyio.CancelScope(shield=True):  # a write, once begun, is seen through
                written = await anyio.to_thread.run_sync(self._write, framed.data, framed.pending[0][0])
        except (DiskFullError, OSError) as exc:
            self._refused(framed, exc)
            return
        self._durable_now(framed, *written)

    def _in_a_thread(self, group: list[Append]) -> bool:
        """Whether this group's write and fsync go to a worker thread (`config.sync`); asked once a group.

        "auto" sends a group there only while urgent messages come
        together and no batch work is in the group or queued behind it.
        Urgent traffic from many connections then has the loop parse the
        next messages during the fsync, and they share the next one: at 8
        connections of the corpus a group held 3.1 records, against 1.8 on
        the loop's thread. Messages come together when this group or the
        one synced before it held more than one record; one connection's
        messages, one at a time, leave the loop nothing to parse meanwhile,
        and the hop cost them about a quarter of their throughput. Under a
        billing flood the loop, not the disk, is what an urgent message
        waits for, and the hop to the thread and back (every group, `sync =
        "thread"`) raised the routine results' latency by 1-2 ms and cost
        billing 5-8% of its throughput, so a group with batch work in it or
        behind it is written on the loop's thread.
        """
        mode = self.config.sync
        if mode != "auto":
            return mode == "thread"
        together = sum(len(a.envelopes) for a in group) > 1
        company, self._synced_company = together or self._synced_company, together
        batch_queued = len(self._queue) > self._urgent_queued
        return company and not batch_queued and all(a.urgent for a in group)

    def _commit_framed(self, framed: Framed) -> None:
        """Write and fsync one framed group on this thread, then answer it."""
        group = framed.group
        if self._failure is not None:
            answer(group, self._failure)
            return
        if not framed.data:
            answer(group, None)
            return
        try:
            seg, start = self._write(framed.data, framed.pending[0][0])
        except (DiskFullError, OSError) as exc:
            self._refused(framed, exc)
            return
        self._durable_now(framed, seg, start)

    def _refused(self, framed: Framed, exc: BaseException) -> None:
        """A group the disk did not take: full (retry later, nothing written), or the log stops."""
        group = framed.group
        if isinstance(exc, DiskFullError):
            self._disk_full += 1
            self._rewind()
            answer(group, exc)
            return
        assert isinstance(exc, OSError)
        self._fail(f"{exc.strerror or exc} while writing the log", exc)
        answer(group, self._failure)

    def _durable_now(self, framed: Framed, seg: SegmentInfo, start: int) -> None:
        """A group written and fsync'd: indexed, the tip made the durable end, its appends answered."""
        group = framed.group
        for (lsn, message_id, digest, patients), offset in zip(framed.pending, framed.offsets, strict=True):
            self._index.add(start + offset, lsn, message_id, digest, patients)
            self._inflight.pop((message_id, digest), None)
            if self._inflight_ids.get(message_id) == lsn:  # the first copy, now in the index
                del self._inflight_ids[message_id]
        seg.last_lsn = self._last_lsn = framed.pending[-1][0]
        seg.size = start + len(framed.data)
        self._last_hash = framed.hashes[-1]
        self._appended += len(framed.pending)
        self._groups += 1
        if self.on_durable is not None:
            self.on_durable(_durable(group))
        answer(group, None)

    def _write(self, data: bytes, first_lsn: int) -> tuple[SegmentInfo, int]:
        """Begin a segment if this one is full, then write and fdatasync."""
        seg = self._index.segments[-1]
        if seg.size + len(data) > self.config.segment_bytes_max and seg.last_lsn >= seg.first_lsn:
            seg = self._active.begin(first_lsn)
            self._index.add_segment(seg)
        return seg, self._active.write(seg, data)

    def _rewind(self) -> None:
        """Forget the refused group: the tip goes back to the durable end."""
        self._tip_lsn, self._tip_hash = self._last_lsn, self._last_hash
        self._inflight.clear()
        self._inflight_ids.clear()

    def _fail(self, why: str, exc: BaseException) -> None:
        self._failure = WALFailedError(f"the log stopped: {why}; appends are refused until the node restarts")
        self._failure.__cause__ = exc
        _log.error("wal.failed", reason=why)

    # -- checkpoints ----------------------------------------------------------

    async def _checkpoint_beside(self) -> None:
        # The LSN and its hash are read together here, on the loop, where the writer moves both: read in
        # the thread, the writer could move the LSN between the two reads, and the keyed checkpoint would
        # pair one record's LSN with another's hash (a false tamper alarm in `vigil audit verify`).
        mark = (self._last_lsn, self._last_hash)
        try:
            await anyio.to_thread.run_sync(self.checkpoint, mark)
        finally:
            self._checkpointing = False

    async def seal(self) -> int:
        """A checkpoint (and, with the audit key, a keyed one) at the durable end now; its LSN.

        A copy of the log taken after it (`vigil backup`) is vouched for up to there.
        """
        while self._checkpointing:  # noqa: ASYNC110 -- the writer's own checkpoint, a moment's work, ends first
            await anyio.sleep(0.005)
        self._checkpointing = True
        try:
            await anyio.to_thread.run_sync(self.checkpoint, (self._last_lsn, self._last_hash))
        finally:
            self._checkpointing = False
        return self._checkpoint_lsn

    def checkpoint(self, mark: tuple[int, bytes] | None = None) -> None:
        """Record the last durable LSN and its hash (`mark`, read together; now when None: on the loop only).

        Recovery verifies the chain from here. A checkpoint only shortens
        recovery: if writing it fails, the log is still whole, so the error is
        logged and the next checkpoint tries again.
        """
        lsn, digest = mark if mark is not None else (self._last_lsn, self._last_hash)
        if lsn in (0, self._checkpoint_lsn) or self._failure is not None:
            return
        at = utc_now()
        try:
            self._checkpoints.save(Checkpoint(lsn, digest, at))
            if self._audit is not None:
                self._audit.append(lsn, digest, at)
        except OSError as exc:
            _log.error("wal.checkpoint_failed", reason=exc.strerror or str(exc), lsn=lsn)
            return
        self._checkpoint_lsn = lsn

    def save_index(self) -> None:
        """Save the indexes for a fast next start (at a clean stop, after the checkpoint)."""
        if self._failure is not None or self._last_lsn != self._checkpoint_lsn:
            return
        snapshot = self._index.snapshot(self._last_lsn, self._last_hash)
        if snapshot is None:
            return
        try:
            self._saved_index.save(snapshot)
        except OSError as exc:
            _log.error("wal.index_save_failed", reason=exc.strerror or str(exc))

    # -- retention ----------------------------------------------------------

    async def release_segments_before(self, lsn: int) -> int:
        """Delete whole sealed segments whose records are all below `lsn`; return how many.

        The caller decides that nothing needs them any more (`engine.retention`
        archives them first): by default a medical record keeps everything.
        The base file is written before any deletion, so a crash in between
        loses nothing the log still needs.
        """
        if self._copies:
            return 0  # a backup is copying them: the next look releases them
        segments = self._index.segments
        count = 0
        while count < len(segments) - 1 and segments[count].last_lsn < lsn:
            count += 1
        if count == 0:
            return 0
        base = Base(segments[count].first_lsn, await anyio.to_thread.run_sync(self._last_hash_of, segments[count - 1]))
        await anyio.to_thread.run_sync(BaseStore(self.directory, self._files).save, base)
        doomed = self._index.release(count)
        self._first_lsn = base.first_lsn

        def delete() -> None:
            for seg in doomed:
                self._reads.forget(seg.path)
                self._files.remove(seg.path)
            self._files.sync_dir(self.directory)

        await anyio.to_thread.run_sync(delete)
        _log.info("wal.segments_released", segments=count, first_lsn=base.first_lsn)
        return count

    @contextmanager
    def cut(self) -> Iterator[LogCut]:
        """The log as durable now, for a copy made while it is written; no segment is released until the copy ends."""
        self._copies += 1
        try:
            yield LogCut(self._last_lsn, tuple((seg.path.name, seg.size) for seg in self._index.segments))
        finally:
            self._copies -= 1

    def sealed_segments(self) -> list[SegmentFile]:
        """The segments no longer written (every one but the last), oldest first."""
        return [SegmentFile(seg.path, seg.first_lsn, seg.last_lsn, seg.size) for seg in self._index.segments[:-1]]

    def _last_hash_of(self, seg: SegmentInfo) -> bytes:
        """The chain hash of a sealed segment's last record."""
        data = self._reads.read(seg.path, 0, seg.size)
        pos, body = sparse_offset(seg, seg.last_lsn), b""
        while (frame := read_frame(data, pos)) is not None:
            pos, body = frame.end, frame.body
        return body_hash(body)

    # -- reading ------------------------------------------------------------

    @property
    def first_lsn(self) -> int:
        """The first LSN the log still holds (1 unless segments were released)."""
        return self._first_lsn

    @property
    def last_lsn(self) -> int:
        """The last durable LSN (0 for an empty log)."""
        return self._last_lsn

    def lookup(self, message_id: str, digest: int = 0) -> int | None:
        """The LSN of a message (its id and content digest; 0: any content), if the log has it durably."""
        return self._index.lookup(message_id, digest)

    @overload
    def read_from(self, lsn: int = 1) -> Iterator[LogRecord]: ...

    @overload
    def read_from(self, lsn: int, decode: Callable[[bytes], _Decoded]) -> Iterator[_Decoded]: ...

    def read_from(self, lsn: int = 1, decode: Callable[[bytes], Any] = decode_record) -> Iterator[Any]:
        """Every durable record from `lsn` on, in order; every CRC is checked.

        `decode` turns a record's body into what the reader wants (default: a
        whole `LogRecord`); a reader that needs less decodes less.

        Raises:
            WALCorruptError: a record read back fails its CRC.
        """
        lsn = max(lsn, 1)
        last = self._last_lsn
        for seg in self._index.segments_from(lsn):
            if seg.last_lsn < seg.first_lsn or lsn > last:
                return
            base, data, pos = sparse_offset(seg, lsn), b"", 0
            while True:
                record = self._decode_at(data, pos, seg, base + pos, decode)
                if record is None:
                    # Read on in bounded windows: a reader on an event loop never stalls on a whole segment.
                    end = base + len(data)
                    if end >= seg.size:
                        break
                    chunk = self._reads.read(seg.path, end, min(_READ_WINDOW_BYTES, seg.size - end))
                    data, base, pos = data[pos:] + chunk, base + pos, 0
                    continue
                pos = record[1]
                if record[0].lsn > last:
                    return
                if record[0].lsn >= lsn:
                    yield record[0]

    def patient_record_count(self, patient: str) -> int:
        """How many records touch a patient (from the index in memory: no read)."""
        return self._index.patient_record_count(patient)

    @overload
    def read_patient(self, patient: str, *, after_lsn: int = 0) -> Iterator[LogRecord]: ...

    @overload
    def read_patient(
        self, patient: str, *, after_lsn: int = 0, decode: Callable[[bytes], _Decoded]
    ) -> Iterator[_Decoded]: ...

    def read_patient(
        self, patient: str, *, after_lsn: int = 0, decode: Callable[[bytes], Any] = decode_record
    ) -> Iterator[Any]:
        """Every durable record touching one patient (after `after_lsn`), in order, without a scan.

        `decode` as for `read_from` (a patient's fold needs less than the whole record).

        After an LSN (what a snapshot or a record in memory holds), the patient's records are read
        newest first down to it, so only the ones after it are read: a patient with 60,000
        records and a snapshot a few records old costs those few.
        """
        if after_lsn <= 0:
            for seg, offset in self._index.patient_positions(patient):
                found = self._read_at(seg, offset, decode)
                if found is not None:
                    yield found
            return
        newer: list[Any] = []
        for seg, offset in self._index.patient_positions(patient, newest_first=True):
            if seg.last_lsn <= after_lsn:
                break
            found = self._read_at(seg, offset, decode)
            if found is not None:
                if found.lsn <= after_lsn:
                    break
                newer.append(found)
        yield from reversed(newer)

    def _read_at(self, seg: SegmentInfo, offset: int, decode: Callable[[bytes], Any]) -> Any:
        # One read takes a usual record whole; a larger one needs a second for the rest.
        data = self._reads.read(seg.path, offset, _RECORD_READ_BYTES, durable=seg.size)
        need = 8 + int.from_bytes(data[:4], "little")
        if len(data) < need:
            data += self._reads.read(seg.path, offset + len(data), need - len(data), durable=seg.size)
        found = self._decode_at(data[:need], 0, seg, offset, decode)
        return found[0] if found is not None else None

    def _decode_at(
        self, data: bytes, pos: int, seg: SegmentInfo, where: int, decode: Callable[[bytes], Any] = decode_record
    ) -> tuple[Any, int] | None:
        frame = read_frame(data, pos)
        if frame is None:
            return None
        if not frame.crc_ok:
            raise WALCorruptError("CRC mismatch on read", seg.name, where)
        return decode(frame.body), frame.end

    def statistics(self) -> WALStatistics:
        """A snapshot of the counters."""
        return WALStatistics(
            last_lsn=self._last_lsn,
            segments=len(self._index.segments),
            appended_records=self._appended,
            duplicate_records=self._duplicates,
            reused_control_ids=self._reused,
            groups=self._groups,
            queued_appends=len(self._queue),
            disk_full_refusals=self._disk_full,
            failed=str(self._failure) if self._failure else None,
            direct_commits=self._direct,
        )

    def close(self) -> None:
        """Checkpoint, save the indexes, release the segment handle (the writer has stopped)."""
        if self._failure is None and self._index.segments:
            self.checkpoint()
            self.save_index()
        self._active.close()
        self._reads.close()

    def abandon(self) -> None:
        """Give up before the writer ever ran (recovery failed): release what was made."""
        self._closing = True
        self._active.close()
        self._reads.close()


@asynccontextmanager
async def open_wal(
    directory: Path,
    config: WalConfig | None = None,
    *,
    files: FileLayer | None = None,
    clock: Callable[[], str] = utc_now,
    tail_window_bytes: int | None = None,
    audit_key: bytes | None = None,
    progress: Progress | None = None,
) -> AsyncIterator[WriteAheadLog]:
    """Open (creating or recovering) a log directory and run its writer.

    `progress` is told (bytes done, bytes in all) as recovery scans the log.

    Raises:
        WALLockedError: another process has this log open.
        WALCorruptError: the log is damaged before its tail.
    """
    config = config if config is not None else WalConfig()
    files = files if files is not None else OSFiles()
    await anyio.to_thread.run_sync(files.list, directory)  # creates the directory
    window = tail_window_bytes if tail_window_bytes is not None else config.group_bytes_max + 64 * 1024 * 1024
    with DirectoryLock(directory):
        wal = WriteAheadLog(directory, config, files, clock=clock, tail_window_bytes=window, audit_key=audit_key)
        try:
            await anyio.to_thread.run_sync(wal.recover, progress)
        except BaseException:
            wal.abandon()
            raise
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(wal.run)
                wal._new_event = type(anyio.Event())
                try:
                    yield wal
                finally:
                    # Let the writer finish what is queued, then stop it.
                    wal.stop_writer()
        finally:
            # Shielded: a node stops by cancellation, and the close (checkpoint, keyed checkpoint, saved
            # index) must still run, or the next start scans the whole log and the stop is not sealed.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(wal.close)
