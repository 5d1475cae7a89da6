"""Replication: each partition's records, from the owner's local log to its subject in the JetStream stream.

The owner of partition N publishes its records, in LSN order, to
`<prefix>.N`, several records to a stream message (`ReplicaBatch`). Every
publish carries `Nats-Expected-Last-Subject-Sequence`: the stream takes it
only if nothing else was written to that subject since this owner's last
publish. A new owner's first act is to publish an *epoch marker* on the
subject, so an old owner that wakes up (a paused process, a partitioned
network) has its next publish refused: it is fenced out, and stops serving
the partition at once. Publishes also carry `Nats-Msg-Id` (node, epoch, LSN
range), so a retry of a publish whose ack was lost is deduplicated.

Publishes of one partition are sequential (each needs the sequence the last
one got); partitions publish concurrently, so the stream sees many publishes
in flight. The stream itself says how far an owner got: the last message on
a subject names its node, epoch and last LSN, so nothing else need be stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, final

import anyio
import msgspec
import nats.errors
import nats.js.errors
import structlog
from anyio.abc import TaskGroup, TaskStatus
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine.core.errors import VigilError
from engine.core.model import Envelope
from engine.wal import Durable, LogRecord

__all__ = [
    "FencedError",
    "ReplicaBatch",
    "ReplicaRecord",
    "Replicator",
    "decode_batch",
    "last_on_subject",
    "read_partition",
    "read_sequenced",
]

_log = structlog.get_logger("vigil.cluster")

_WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's "wrong last sequence" error codes
_RETRY_S = (0.05, 0.1, 0.25, 0.5, 1.0)
_READ_TIMEOUT_S = 60.0  # a takeover's read of one subject; past it the takeover fails and is tried again


class FencedError(VigilError):
    """This node no longer owns the partition (another took it, or its lease ran out): nothing more is written."""


@final
class ReplicaRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One record as replicated: the origin's LSN and time, the message id, the envelope."""

    lsn: int
    recorded_at: str
    message_id: str
    envelope: Envelope


@final
class ReplicaBatch(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One stream message: records of one partition from one owner and epoch (none: an epoch marker).

    `last_lsn` is the owner's local LSN the subject is replicated up to: the
    last record's, or for a marker the owner's last LSN when it took over.
    """

    node: str
    partition: int
    epoch: int
    last_lsn: int
    records: tuple[ReplicaRecord, ...] = ()


_ENCODER = msgspec.msgpack.Encoder()
_BATCH = msgspec.msgpack.Decoder(ReplicaBatch)


def decode_batch(data: bytes) -> ReplicaBatch | None:
    """A stream message's batch, or None for anything else on the subject."""
    try:
        return _BATCH.decode(data)
    except msgspec.DecodeError:
        return None


def subject_of(prefix: str, partition: int) -> str:
    return f"{prefix}.{partition}"


async def last_on_subject(js: Any, stream: str, subject: str) -> tuple[int, ReplicaBatch | None]:
    """The stream sequence of the subject's last message (0: none) and its batch."""
    try:
        msg = await js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return 0, None
    return int(msg.seq), decode_batch(msg.data or b"")


async def publish_marker(js: Any, stream: str, subject: str, marker: ReplicaBatch, expected_seq: int) -> int:
    """A new owner's epoch marker, written only if the subject is where the owner last saw it.

    Raises:
        FencedError: someone wrote to the subject in between.
    """
    headers = {
        "Nats-Msg-Id": f"{marker.node}/p{marker.partition}/e{marker.epoch}/marker",
        "Nats-Expected-Last-Subject-Sequence": str(expected_seq),
    }
    try:
        ack = await js.publish(subject, _ENCODER.encode(marker), stream=stream, headers=headers)
    except nats.js.errors.APIError as exc:
        if exc.err_code in _WRONG_LAST_SEQUENCE:
            raise FencedError(f"partition {marker.partition}: the subject moved while taking it over") from None
        raise
    return int(ack.seq)


async def read_partition(
    js: Any, stream: str, subject: str, *, until_seq: int, batch_max: int = 256
) -> list[ReplicaBatch]:
    """Every batch on a partition's subject up to stream sequence `until_seq`, in order, markers included."""
    return [batch for _, batch in await read_sequenced(js, stream, subject, until_seq=until_seq, batch_max=batch_max)]


async def read_sequenced(
    js: Any, stream: str, subject: str, *, until_seq: int, batch_max: int = 256
) -> list[tuple[int, ReplicaBatch]]:
    """As `read_partition`, each batch with its stream sequence."""
    if until_seq <= 0:
        return []
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        # One replica, in memory: a read that lives for one takeover needs no raft group of its own
        # (an R3 consumer is one more leader election, and a slow one while a server is down).
        mem_storage=True,
        num_replicas=1,
    )
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    batches: list[tuple[int, ReplicaBatch]] = []
    try:
        seq = 0
        with anyio.fail_after(_READ_TIMEOUT_S):
            while seq < until_seq:
                try:
                    msgs = await sub.fetch(batch_max, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                except nats.js.errors.ServiceUnavailableError:
                    # A new consumer on a replicated stream answers 503 until it has a leader.
                    await anyio.sleep(0.1)
                    continue
                for msg in msgs:
                    seq = msg.metadata.sequence.stream
                    if seq > until_seq:
                        break
                    batch = decode_batch(msg.data)
                    if batch is None:
                        # Nothing but Vigil's batches and markers belongs here: said, with where, never skipped
                        # unseen (a takeover that skipped records would serve a record without them).
                        _log.error("cluster.stream_message_unreadable", subject=subject, stream_seq=seq)
                        continue
                    batches.append((seq, batch))
    finally:
        with anyio.move_on_after(2, shield=True):
            await sub.unsubscribe()
    return batches


@dataclass
class _Partition:
    """What the replicator keeps of one held partition: its epoch, where the subject is, what waits."""

    epoch: int
    last_seq: int  # the subject's last stream sequence, as this owner wrote it
    cursor: int  # every record of this partition and epoch up to this local LSN is in the stream
    pending: list[ReplicaRecord] = field(default_factory=list)  # durable here, not yet in the stream (LSN order)
    changed: anyio.Event = field(default_factory=anyio.Event)
    wake: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def moved(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


@final
class Replicator:
    """Publishes the held partitions' new records, and tells waiters when theirs are in the stream.

    The log tells it of every record once durable, in LSN order
    (`WriteAheadLog.on_durable`), so nothing is read back from disk. Each held
    partition has its own publisher: one publish in flight per partition (each
    needs the sequence the last one got), every partition at once, and what
    arrives while a publish is in flight goes in the next one.
    """

    def __init__(
        self,
        js: Any,
        *,
        node: str,
        stream: str,
        subject_prefix: str,
        records_max: int,
        valid: Callable[[int, int], bool],
    ) -> None:
        self._js = js
        self._node = node
        self._stream = stream
        self._prefix = subject_prefix
        self._records_max = records_max
        self._valid = valid  # (partition, epoch) -> whether this node may still write it
        self._held: dict[int, _Partition] = {}
        self._tasks: TaskGroup | None = None
        self.published_records = 0
        self.fenced: list[int] = []  # partitions fenced out since the last look (the coordinator drops them)

    def adopt(self, partition: int, epoch: int, *, last_seq: int, cursor: int) -> None:
        """Start replicating a partition just taken (after its marker): its records from now on.

        Raises:
            RuntimeError: the replicator is not running.
        """
        if self._tasks is None:
            raise RuntimeError("the replicator is not running")
        self.drop(partition)
        state = _Partition(epoch, last_seq, cursor)
        self._held[partition] = state
        self._tasks.start_soon(self._serve, partition, state)

    def drop(self, partition: int) -> None:
        """Stop replicating a partition (lost, released): its publisher stops, its waiters learn it at once."""
        state = self._held.pop(partition, None)
        if state is not None:
            state.scope.cancel()
            state.moved()

    def on_durable(self, records: list[Durable]) -> None:
        """From the log's writer: new durable records; those of held partitions (this epoch) wait for publishing."""
        for partition, epoch, lsn, recorded_at, envelope in records:
            state = self._held.get(partition)
            if state is not None and state.epoch == epoch:
                state.pending.append(ReplicaRecord(lsn, recorded_at, envelope.message_id, envelope))
                state.wake.set()

    def position(self, partition: int) -> tuple[int, int] | None:
        """(stream sequence, local LSN): everything on the partition's subject up to that sequence is in the
        local log at or below that LSN; None when the partition is not held.

        The two move together (no await between them), so any reading of them is a true pair.
        """
        state = self._held.get(partition)
        return None if state is None else (state.last_seq, state.cursor)

    def cursor(self, partition: int) -> int | None:
        state = self._held.get(partition)
        return None if state is None else state.cursor

    def pending(self, partition: int) -> int:
        """Records of a held partition durable here but not yet in the stream."""
        state = self._held.get(partition)
        return 0 if state is None else len(state.pending)

    def lag_records(self) -> int:
        """Records of held partitions durable here but not yet in the stream."""
        return sum(len(s.pending) for s in self._held.values())

    async def wait_room(self, partition: int, epoch: int, pending_max: int) -> None:
        """Return once fewer than `pending_max` of the partition's records wait for the stream (backpressure).

        Raises:
            FencedError: the partition was lost meanwhile.
        """
        while True:
            state = self._held.get(partition)
            if state is None or state.epoch != epoch:
                raise FencedError(f"partition {partition} was lost while its replication was behind")
            if len(state.pending) < pending_max:
                return
            await state.changed.wait()

    async def wait_replicated(self, partition: int, epoch: int, lsn: int) -> None:
        """Return once the record at `lsn` (of this partition and epoch) is in the stream.

        Raises:
            FencedError: the partition was lost before it got there.
        """
        while True:
            state = self._held.get(partition)
            if state is None or state.epoch != epoch:
                raise FencedError(f"partition {partition} was lost before its record reached the stream")
            if state.cursor >= lsn:
                return
            await state.changed.wait()

    async def publish_backlog(self, partition: int, records: Sequence[LogRecord]) -> bool:
        """Publish, under the partition's new epoch, this node's records of it that never reached the stream.

        They were written before a crash or an outage, in an earlier epoch of
        this node's, and found missing from the subject at takeover. False
        when they could not all be published (the partition is then not served).
        """
        state = self._held.get(partition)
        if state is None:
            return False
        backlog = [ReplicaRecord(r.lsn, r.recorded_at, r.message_id, r.envelope) for r in records]
        for i in range(0, len(backlog), self._records_max):
            if not await self._publish_fenced(partition, state, backlog[i : i + self._records_max]):
                return False
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the partitions' publishers until cancelled."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            task_status.started()
            await anyio.sleep_forever()

    async def _serve(self, partition: int, state: _Partition) -> None:
        """One partition's publisher: what is pending, a batch at a time; the broker away, again later."""
        with state.scope:
            while True:
                await state.wake.wait()
                state.wake = anyio.Event()
                while state.pending:
                    chunk = state.pending[: self._records_max]
                    if not await self._publish_fenced(partition, state, chunk):
                        await anyio.sleep(_RETRY_S[-1])  # the records wait here and in the local log
                        continue
                    del state.pending[: len(chunk)]
                    if chunk[-1].lsn > state.cursor:
                        state.cursor = chunk[-1].lsn
                        state.moved()

    async def _publish_fenced(self, partition: int, state: _Partition, chunk: Sequence[ReplicaRecord]) -> bool:
        """One batch; a fencing drops the partition (and says so to the coordinator)."""
        batch = ReplicaBatch(self._node, partition, state.epoch, chunk[-1].lsn, tuple(chunk))
        try:
            published = await self._publish(partition, state, batch)
        except FencedError as exc:
            _log.warning("cluster.fenced", partition=partition, epoch=state.epoch, reason=str(exc))
            self.fenced.append(partition)
            self.drop(partition)
            return False
        if published:
            self.published_records += len(chunk)
        return published

    async def _publish(self, partition: int, state: _Partition, batch: ReplicaBatch) -> bool:
        """One batch, retried with the same id while the lease holds; False when the broker stays away.

        Raises:
            FencedError: the subject moved on without us, or the lease ran out.
        """
        subject = subject_of(self._prefix, partition)
        body = _ENCODER.encode(batch)
        headers = {
            "Nats-Msg-Id": f"{self._node}/p{partition}/e{batch.epoch}/{batch.records[0].lsn}-{batch.last_lsn}",
            "Nats-Expected-Last-Subject-Sequence": str(state.last_seq),
        }
        for delay in _RETRY_S:
            if not self._valid(partition, state.epoch):
                raise FencedError(f"partition {partition}: the lease ran out before the publish")
            try:
                state.last_seq = await self._publish_once(subject, body, dict(headers), batch)
            except (nats.errors.Error, OSError) as exc:  # not FencedError: that one ends the partition
                _log.warning("cluster.publish_failed", partition=partition, error=type(exc).__name__)
                await anyio.sleep(delay)
                continue
            return True
        return False

    async def _publish_once(self, subject: str, body: bytes, headers: dict[str, str], batch: ReplicaBatch) -> int:
        """One attempt: the stream sequence the batch has (a deduplicated retry names the first attempt's).

        Raises:
            FencedError: another owner wrote to the subject since our last publish.
        """
        try:
            ack = await self._js.publish(subject, body, stream=self._stream, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _WRONG_LAST_SEQUENCE:
                raise
            # Our own earlier attempt may have landed with its ack lost: then the subject ends with it.
            seq, last = await last_on_subject(self._js, self._stream, subject)
            if last is not None and (last.node, last.epoch, last.last_lsn) == (self._node, batch.epoch, batch.last_lsn):
                return seq
            raise FencedError(f"partition {batch.partition}: another owner wrote to it") from None
        return int(ack.seq)
