"""The cluster as the broker holds it: members, leases, the replicated log (what `vigil cluster` shows).

Read-only, from any host that reaches NATS: no node needs to answer. Ages
are the broker's timestamps against this host's clock, for people to read;
no decision is made on them (the nodes judge leases on their own clocks).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, final

import anyio
import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine.cluster.leases import decode_lease, decode_member
from engine.cluster.replication import ReplicaBatch, decode_batch, last_on_subject
from engine.core.errors import VigilError
from engine.infra.clock import wall_now
from engine.infra.config import ClusterConfig

_log = structlog.get_logger("vigil.cluster")

__all__ = [
    "LeaseRow",
    "LogRow",
    "MemberRow",
    "StreamRow",
    "UnreadableStreamError",
    "bucket_keys",
    "read_leases",
    "read_log",
    "read_members",
    "read_stream",
]


@final
class MemberRow(msgspec.Struct, frozen=True):
    """A node's last heartbeat, and how old it is."""

    node: str
    heartbeat_age_s: float
    serving: tuple[int, ...]
    last_lsn: int
    replication_lag_records: int
    nats: str
    started_at: str


@final
class LeaseRow(msgspec.Struct, frozen=True):
    """A partition's lease: its owner ("" when released or never taken), epoch and age."""

    partition: int
    owner: str
    epoch: int
    lease_age_s: float | None


@final
class StreamRow(msgspec.Struct, frozen=True):
    """The replicated log's stream: its replicas, size, and the servers holding it."""

    stream: str
    replicas: int
    storage: str
    messages: int
    bytes: int
    leader: str | None
    replicas_current: int


@final
class LogRow(msgspec.Struct, frozen=True):
    """One replicated record, without content or patient (metadata only)."""

    stream_seq: int
    partition: int
    epoch: int
    node: str
    lsn: int
    message_id: str
    lane: str
    message_type: str


async def _last(js: Any, bucket: str, key: str) -> Any | None:
    try:
        return await js.get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{key}")
    except nats.js.errors.NotFoundError:
        return None


async def bucket_keys(js: Any, bucket: str) -> list[str]:
    """A key-value bucket's keys, from its stream's subjects (one request; a KV watcher is heavier and less sure)."""
    try:
        info = await js.stream_info(f"KV_{bucket}", subjects_filter=">")
    except nats.js.errors.NotFoundError:
        return []
    prefix = f"$KV.{bucket}."
    return sorted(s[len(prefix) :] for s in (info.state.subjects or {}))


def _age_s(msg: Any) -> float | None:
    stamp = getattr(msg, "time", None)
    return None if stamp is None else round((wall_now() - stamp).total_seconds(), 1)


def _deleted(msg: Any) -> bool:
    return (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE")


async def read_members(js: Any, config: ClusterConfig) -> list[MemberRow]:
    """Every member that has a heartbeat (a node that stopped cleanly has none)."""
    bucket = f"{config.bucket_prefix}_members"
    rows = []
    for key in await bucket_keys(js, bucket):
        msg = await _last(js, bucket, key)
        info = decode_member(msg.data) if msg is not None and not _deleted(msg) else None
        if info is None:
            continue
        age = _age_s(msg)
        rows.append(
            MemberRow(
                info.node,
                age if age is not None else -1.0,
                info.serving,
                info.last_lsn,
                info.replication_lag_records,
                info.nats,
                info.started_at,
            )
        )
    return rows


async def read_leases(js: Any, config: ClusterConfig) -> list[LeaseRow]:
    """Every partition's lease."""
    bucket = f"{config.bucket_prefix}_leases"
    rows = []
    for p in range(config.partitions):
        msg = await _last(js, bucket, f"p{p}")
        value = decode_lease(msg.data) if msg is not None else None
        if value is None:
            rows.append(LeaseRow(p, "", 0, None))
        else:
            rows.append(LeaseRow(p, value.owner, value.epoch, _age_s(msg)))
    return rows


async def read_stream(js: Any, config: ClusterConfig) -> StreamRow | None:
    """The log stream's settings and state (None when it does not exist yet)."""
    try:
        info = await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        return None
    cluster = info.cluster
    current = sum(1 for r in (cluster.replicas or []) if r.current) if cluster is not None else 0
    return StreamRow(
        config.stream,
        info.config.num_replicas or 1,
        str(getattr(info.config.storage, "value", info.config.storage)),
        info.state.messages,
        info.state.bytes,
        cluster.leader if cluster is not None else None,
        current + (1 if cluster is not None and cluster.leader else 0),
    )


class UnreadableStreamError(VigilError):
    """A message on the log's subjects that is not one of Vigil's batches or markers."""


async def read_log(js: Any, config: ClusterConfig, *, partition: int | None = None) -> AsyncIterator[LogRow]:
    """Every replicated record, in stream order (one partition's with `partition`); markers are skipped.

    Reads up to the end the stream's leader names when the read begins. The
    consumer may be placed on any replica, and one that lags runs out early:
    its `num_pending` never ends the read. Reading the whole stream, a
    sequence the consumer skipped is fetched from the leader and said
    (`cluster.stream_read_gap`). The answer is never silently short.

    Raises:
        TimeoutError: the stream stopped answering before the end was reached.
        UnreadableStreamError: a message on the log's subjects is not a batch (never skipped unseen).
    """
    subject = f"{config.subject_prefix}.{partition if partition is not None else '>'}"
    first, last = await _extent(js, config.stream, subject, whole=partition is None)
    if last == 0:
        return
    consumer = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,  # a read for one command: no raft group of its own
    )
    sub = await js.pull_subscribe(subject, stream=config.stream, config=consumer)
    expected = first  # the next sequence of the whole stream (0: one subject's, not contiguous)
    try:
        while True:
            with anyio.fail_after(_STALL_S):
                msgs = await _next(sub)
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if seq > last:
                    return  # written after the read began
                if expected and seq > expected:
                    with anyio.fail_after(_STALL_S):
                        skipped = await _from_leader(js, config.stream, expected, seq)
                    for row in skipped:
                        yield row
                expected = seq + 1 if expected else 0
                for row in _rows(seq, _batch(seq, msg.subject, msg.data)):
                    yield row
                if seq == last:
                    return
    finally:
        await sub.unsubscribe()


async def _extent(js: Any, stream: str, subject: str, *, whole: bool) -> tuple[int, int]:
    """(first, last) stream sequence to read, as the stream's leader says; (0, 0) when there is nothing."""
    try:
        info = await js.stream_info(stream)  # answered by the stream's leader
    except nats.js.errors.NotFoundError:
        return 0, 0
    if whole:
        return (info.state.first_seq, info.state.last_seq) if info.state.messages else (0, 0)
    last, _batch = await last_on_subject(js, stream, subject)
    return 0, last


async def _from_leader(js: Any, stream: str, first: int, after_last: int) -> list[LogRow]:
    """The messages `first` to `after_last - 1`, which the consumer skipped, each asked of the stream's leader."""
    rows: list[LogRow] = []
    deleted = 0
    for seq in range(first, after_last):
        try:
            msg = await js.get_msg(stream, seq)  # not direct: only the leader answers
        except nats.js.errors.NotFoundError:
            deleted += 1  # removed from the stream: not a hole in this read
            continue
        rows.extend(_rows(seq, _batch(seq, msg.subject or "", msg.data or b"")))
    _log.warning("cluster.stream_read_gap", first=first, last=after_last - 1, deleted=deleted)
    return rows


def _batch(seq: int, subject: str, data: bytes) -> ReplicaBatch:
    batch = decode_batch(data)
    if batch is None:
        raise UnreadableStreamError(
            f"stream message {seq} on {subject} is not a replica batch ({len(data)} bytes): "
            "the stream holds something Vigil did not write there"
        )
    return batch


def _rows(seq: int, batch: ReplicaBatch) -> list[LogRow]:
    lanes = [(r.envelope.lane.value, r.envelope.message_type) for r in batch.records]
    return [
        LogRow(seq, batch.partition, batch.epoch, batch.node, r.lsn, r.message_id, lane, message_type)
        for r, (lane, message_type) in zip(batch.records, lanes, strict=True)
    ]


_STALL_S = 30.0  # the stream gave nothing this long while messages were pending: an error, never a short answer


async def _next(sub: Any) -> list[Any]:
    """The consumer's next messages, waited for (the caller bounds the wait: it knows the end exists)."""
    while True:
        try:
            return list(await sub.fetch(512, timeout=1.0))
        except nats.errors.TimeoutError:
            continue
        except nats.js.errors.ServiceUnavailableError:
            await anyio.sleep(0.1)  # a new consumer on a replicated stream answers 503 until it has a leader
