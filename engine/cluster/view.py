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
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine.cluster.leases import decode_lease, decode_member
from engine.cluster.replication import ReplicaBatch, decode_batch
from engine.core.errors import VigilError
from engine.infra.clock import wall_now
from engine.infra.config import ClusterConfig

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

    Reads until the consumer has nothing pending, so the answer is never
    silently short.

    Raises:
        TimeoutError: the stream stopped answering before the end was reached.
        UnreadableStreamError: a message on the log's subjects is not a batch (never skipped unseen).
    """
    subject = f"{config.subject_prefix}.{partition if partition is not None else '>'}"
    try:
        await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        return
    consumer = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,  # a read for one command: no raft group of its own
    )
    sub = await js.pull_subscribe(subject, stream=config.stream, config=consumer)
    try:
        while True:
            with anyio.fail_after(_STALL_S):
                msgs = await _next(sub)
            if msgs is None:
                return  # nothing pending at all
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                batch = decode_batch(msg.data)
                if batch is None:
                    raise UnreadableStreamError(
                        f"stream message {seq} on {msg.subject} is not a replica batch ({len(msg.data)} bytes): "
                        "the stream holds something Vigil did not write there"
                    )
                for row in _rows(seq, batch):
                    yield row
            if msgs[-1].metadata.num_pending == 0:
                return
    finally:
        await sub.unsubscribe()


def _rows(seq: int, batch: ReplicaBatch) -> list[LogRow]:
    lanes = [(r.envelope.lane.value, r.envelope.message_type) for r in batch.records]
    return [
        LogRow(seq, batch.partition, batch.epoch, batch.node, r.lsn, r.message_id, lane, message_type)
        for r, (lane, message_type) in zip(batch.records, lanes, strict=True)
    ]


_STALL_S = 30.0  # the stream gave nothing this long while messages were pending: an error, never a short answer


async def _next(sub: Any) -> list[Any] | None:
    """The next messages for the consumer, or None when it has none pending (the filter matched nothing)."""
    while True:
        try:
            return list(await sub.fetch(512, timeout=1.0))
        except nats.errors.TimeoutError:
            info = await sub.consumer_info()
            if info.num_pending == 0:
                return None
        except nats.js.errors.ServiceUnavailableError:
            await anyio.sleep(0.1)  # a new consumer on a replicated stream answers 503 until it has a leader
