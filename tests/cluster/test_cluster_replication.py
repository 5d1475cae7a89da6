"""Replication and leases against a real `nats-server` (JetStream, fsync always), with real logs.

In-process: two "nodes" are two logs, two replicators or two coordinators on
one broker. nats-py is asyncio only, so these run on asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
import pytest
import structlog.testing
from nats.js.api import StorageType, StreamConfig

from engine.cluster import (
    Cluster,
    FencedError,
    ReplicaBatch,
    ReplicaRecord,
    Replicator,
    UnreadableStreamError,
    decode_batch,
    read_log,
)
from engine.cluster.replication import last_on_subject, publish_marker, read_partition
from engine.core.decode import Decoder
from engine.core.model import Envelope
from engine.infra.config import ClusterConfig
from engine.wal import WriteAheadLog, open_wal
from tests.harness.cluster_harness import lab_result
from tests.harness.nats_server import nats_cluster, nats_server

pytestmark = pytest.mark.anyio

STREAM, PREFIX = "VIGIL_LOG", "vigil.log"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py


@pytest.fixture
def nats_url(tmp_path: Path) -> Any:
    with nats_server(tmp_path / "nats") as url:
        yield url


def _envelopes(numbers: Sequence[int], tag: str = "R") -> list[Envelope]:
    decoder = Decoder()
    return [decoder.hl7(lab_result(n, n % 5, tag=tag), received_at="t", source="test") for n in numbers]


async def _js(url: str) -> Any:
    client = await nats.connect(url)
    js = client.jetstream(timeout=2)
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"], storage=StorageType.FILE))
    return client, js


async def _replicator(tg: Any, wal: WriteAheadLog, js: Any, node: str, valid: Any = None) -> Replicator:
    """A running replicator, told of the log's durable records."""
    replicator = Replicator(
        js,
        node=node,
        stream=STREAM,
        subject_prefix=PREFIX,
        records_max=8,
        valid=valid or (lambda _p, _e: True),
    )
    await tg.start(replicator.run)
    wal.on_durable = replicator.on_durable
    return replicator


async def _stream_ids(js: Any, partition: int) -> list[str]:
    seq, _last = await last_on_subject(js, STREAM, f"{PREFIX}.{partition}")
    batches = await read_partition(js, STREAM, f"{PREFIX}.{partition}", until_seq=seq)
    return [r.message_id for b in batches for r in b.records]


async def test_records_reach_the_stream_in_order_and_waiters_are_told(tmp_path: Path, nats_url: str) -> None:
    """Batches of at most `records_max`, in LSN order; `wait_replicated` returns once the stream has the record."""
    client, js = await _js(nats_url)
    async with open_wal(tmp_path / "a") as wal, anyio.create_task_group() as tg:
        replicator = await _replicator(tg, wal, js, "a")
        seq = await publish_marker(js, STREAM, f"{PREFIX}.0", ReplicaBatch("a", 0, 1, 0), 0)
        replicator.adopt(0, 1, last_seq=seq, cursor=wal.last_lsn)
        envelopes = _envelopes(range(20))
        positions = await wal.append(envelopes, partition=0, epoch=1)
        await wal.append(_envelopes(range(3), tag="OTHER"), partition=1, epoch=1)  # not held: not published
        await wal.append(_envelopes(range(3), tag="OLD"), partition=0, epoch=0)  # another epoch: not published
        with anyio.fail_after(10):
            await replicator.wait_replicated(0, 1, positions[-1].lsn)
        assert [e.message_id for e in envelopes] == await _stream_ids(js, 0)
        assert await _stream_ids(js, 1) == []
        assert replicator.lag_records() == 0 or replicator.cursor(0) == wal.last_lsn
        tg.cancel_scope.cancel()
    await client.close()


async def test_a_message_on_the_log_subjects_that_is_not_a_batch_is_never_skipped_unseen(
    tmp_path: Path, nats_url: str
) -> None:
    """`vigil cluster log` refuses to answer short; a takeover's read says which message it could not use."""
    client, js = await _js(nats_url)
    seq = await publish_marker(js, STREAM, f"{PREFIX}.0", ReplicaBatch("a", 0, 1, 0), 0)
    await js.publish(f"{PREFIX}.0", b"not a batch")
    config = ClusterConfig(stream=STREAM, subject_prefix=PREFIX)
    with pytest.raises(UnreadableStreamError, match=rf"stream message {seq + 1} on {PREFIX}\.0 is not a replica batch"):
        _ = [row async for row in read_log(js, config)]
    with structlog.testing.capture_logs() as said:
        batches = await read_partition(js, STREAM, f"{PREFIX}.0", until_seq=seq + 1)
    assert [b.epoch for b in batches] == [1]
    assert [(e["event"], e["stream_seq"]) for e in said] == [("cluster.stream_message_unreadable", seq + 1)]
    await client.close()


async def test_the_log_is_read_to_the_leaders_end_and_a_sequence_the_consumer_skipped_is_said(nats_url: str) -> None:
    """`vigil cluster log` ends where the stream ended when it began (never on a replica's "nothing pending"),
    and a sequence its consumer never delivered is asked of the leader and logged, here one deleted."""
    client, js = await _js(nats_url)
    records = [ReplicaRecord(n, "t", e.message_id, e) for n, e in enumerate(_envelopes(range(4)), start=1)]
    for n, record in enumerate(records):
        await js.publish(
            f"{PREFIX}.{n % 2}", msgspec.msgpack.encode(ReplicaBatch("a", n % 2, 1, record.lsn, (record,)))
        )
    await js.delete_msg(STREAM, 2)
    config = ClusterConfig(stream=STREAM, subject_prefix=PREFIX)
    with structlog.testing.capture_logs() as said:
        rows = [row async for row in read_log(js, config)]
        await js.publish(
            f"{PREFIX}.0", msgspec.msgpack.encode(ReplicaBatch("a", 0, 1, 9, (records[0],)))
        )  # after the read
    assert [(r.stream_seq, r.message_id) for r in rows] == [(s, records[s - 1].message_id) for s in (1, 3, 4)]
    assert [(e["event"], e["first"], e["last"], e["deleted"]) for e in said] == [("cluster.stream_read_gap", 2, 2, 1)]
    assert [r.stream_seq for r in [row async for row in read_log(js, config, partition=0)]] == [1, 3, 5]
    await client.close()


async def test_a_new_owners_marker_fences_the_old_owner(tmp_path: Path, nats_url: str) -> None:
    """After another node's epoch marker, the old owner's publishes are refused: it stops, and its waiters hear so."""
    client, js = await _js(nats_url)
    subject = f"{PREFIX}.3"
    async with open_wal(tmp_path / "a") as wal, anyio.create_task_group() as tg:
        old = await _replicator(tg, wal, js, "a")
        seq = await publish_marker(js, STREAM, subject, ReplicaBatch("a", 3, 1, 0), 0)
        old.adopt(3, 1, last_seq=seq, cursor=wal.last_lsn)
        first = await wal.append(_envelopes(range(5)), partition=3, epoch=1)
        with anyio.fail_after(10):
            await old.wait_replicated(3, 1, first[-1].lsn)
        # Another node takes the partition (epoch 2) while this one, paused, did not notice.
        last_seq, _ = await last_on_subject(js, STREAM, subject)
        await publish_marker(js, STREAM, subject, ReplicaBatch("b", 3, 2, 0), last_seq)
        late = await wal.append(_envelopes(range(5, 8)), partition=3, epoch=1)
        with anyio.fail_after(10), pytest.raises(FencedError):
            await old.wait_replicated(3, 1, late[-1].lsn)
        assert old.fenced == [3]
        tg.cancel_scope.cancel()
    assert [f"hl7:LAB|GENHOSP|R{n:07d}" for n in range(5)] == await _stream_ids(js, 3)
    with pytest.raises(FencedError):  # and its own marker for a stale view is refused too
        await publish_marker(js, STREAM, subject, ReplicaBatch("a", 3, 3, 0), last_seq)
    await client.close()


async def test_a_publish_that_landed_with_its_ack_lost_is_not_written_twice(tmp_path: Path, nats_url: str) -> None:
    """The retry meets "wrong last sequence", finds its own batch at the subject's end, and counts it as done."""
    client, js = await _js(nats_url)
    subject = f"{PREFIX}.0"
    when = "2026-11-27T08:00:00.000000+00:00"
    envelopes = _envelopes(range(3))
    async with open_wal(tmp_path / "a", clock=lambda: when) as wal, anyio.create_task_group() as tg:
        seq = await publish_marker(js, STREAM, subject, ReplicaBatch("a", 0, 1, 0), 0)
        # What a first attempt wrote before the connection broke: the broker has it, the node never heard.
        records = tuple(ReplicaRecord(lsn, when, e.message_id, e) for lsn, e in enumerate(envelopes, start=1))
        await js.publish(subject, msgspec.msgpack.encode(ReplicaBatch("a", 0, 1, 3, records)), stream=STREAM)
        replicator = await _replicator(tg, wal, js, "a")
        replicator.adopt(0, 1, last_seq=seq, cursor=0)  # it still believes the subject ends at its marker
        positions = await wal.append(envelopes, partition=0, epoch=1)
        with anyio.fail_after(10):
            await replicator.wait_replicated(0, 1, positions[-1].lsn)
        assert replicator.fenced == []
        tg.cancel_scope.cancel()
    assert len(await _stream_ids(js, 0)) == 3
    await client.close()


async def test_no_publish_once_the_lease_may_have_passed(tmp_path: Path, nats_url: str) -> None:
    """A node whose lease ran out (paused, cut off) writes nothing more, even if the subject has not moved."""
    client, js = await _js(nats_url)
    valid = {"now": True}
    async with open_wal(tmp_path / "a") as wal, anyio.create_task_group() as tg:
        replicator = await _replicator(tg, wal, js, "a", valid=lambda _p, _e: valid["now"])
        seq = await publish_marker(js, STREAM, f"{PREFIX}.0", ReplicaBatch("a", 0, 1, 0), 0)
        replicator.adopt(0, 1, last_seq=seq, cursor=0)
        valid["now"] = False
        positions = await wal.append(_envelopes(range(2)), partition=0, epoch=1)
        with anyio.fail_after(10), pytest.raises(FencedError):
            await replicator.wait_replicated(0, 1, positions[-1].lsn)
        tg.cancel_scope.cancel()
    assert await _stream_ids(js, 0) == []
    await client.close()


def _config(**changes: Any) -> ClusterConfig:
    base = ClusterConfig(enabled=True, partitions=8, replicas=1, lease_ttl_s=1.0, renew_interval_s=0.2)
    return msgspec.structs.replace(base, **changes)


async def _adopter(wal: WriteAheadLog, seen: list[str]) -> Any:
    async def adopt(partition: int, batches: Sequence[ReplicaBatch], _settled: Mapping[str, frozenset[str]]) -> None:
        for batch in batches:
            envelopes = [r.envelope for r in batch.records]
            seen.extend(e.message_id for e in envelopes)
            await wal.append(envelopes, partition=partition, epoch=batch.epoch)

    return adopt


async def _until(condition: Callable[[], bool], limit_s: float) -> None:
    """Poll what another task changes (the coordinators' state), bounded."""
    with anyio.fail_after(limit_s):
        while not condition():  # noqa: ASYNC110 -- state of other tasks, no event to wait on
            await anyio.sleep(0.02)


async def _no_forwarding(_raw: bytes, _source: str) -> bytes:
    return b"[]"


async def test_two_coordinators_share_the_partitions_and_a_stopping_one_hands_over(
    tmp_path: Path, nats_url: str
) -> None:
    """Leases split evenly between two members; a member that stops releases its partitions, the other takes
    them at once (without waiting out the lease) and reads their records from the stream into its own log.

    A crash (no release) is the failover test's, with real processes.
    """
    async with open_wal(tmp_path / "a") as wal_a, open_wal(tmp_path / "b") as wal_b, anyio.create_task_group() as tg:
        seen_b: list[str] = []
        a = Cluster(
            _config(),
            "a",
            wal_a,
            servers=[nats_url],
            security={},
            adopt=await _adopter(wal_a, []),
            forwarded=_no_forwarding,
        )
        b = Cluster(
            _config(),
            "b",
            wal_b,
            servers=[nats_url],
            security={},
            adopt=await _adopter(wal_b, seen_b),
            forwarded=_no_forwarding,
        )
        scope_a = anyio.CancelScope()

        async def run_a() -> None:
            with scope_a:
                await a.run()

        tg.start_soon(run_a)
        tg.start_soon(b.run)
        await _until(lambda: len(a.statistics().serving) == len(b.statistics().serving) == 4, 20)
        assert 4 == len(a.statistics().serving) == len(b.statistics().serving)
        # a writes a record to one of its partitions; it reaches the stream.
        # A message for a patient in one of a's partitions: _envelopes' five patients fall in partitions 0, 2, 5
        # and 6 only, so when b won the first leases and handed a 4-7, a's first partition (4) had none of them.
        serving = a.statistics().serving
        decoder = Decoder()
        candidates = (decoder.hl7(lab_result(n, n, tag="R"), received_at="t", source="test") for n in range(100))
        env = next(e for e in candidates if a.partition_of(e) in serving)
        p = a.partition_of(env)
        epoch = a.enter(p)
        assert epoch is not None
        [position] = await wal_a.append([env], partition=p, epoch=epoch)
        with anyio.fail_after(10):
            await a.wait_replicated(p, epoch, position.lsn)
        a.leave(p)
        scope_a.cancel()
        await _until(lambda: len(b.statistics().serving) == 8, 0.9)  # under the 1 s lease: released, not expired
        assert env.message_id in seen_b
        assert wal_b.lookup(env.message_id) is not None
        assert b.statistics().takeovers >= 8
        tg.cancel_scope.cancel()


def test_a_stream_message_that_is_not_ours_is_skipped() -> None:
    assert decode_batch(b"\x00garbage") is None


async def test_a_partition_far_behind_makes_its_writers_wait(tmp_path: Path) -> None:
    """While the broker is away, records wait; past the bound, `wait_room` holds new writers back (backpressure,
    for lanes acknowledged `local` too), and lets them go once the broker is back and the backlog is published."""
    with nats_cluster(tmp_path / "nats", size=1) as servers:
        client, js = await _js(servers[0].url)
        async with open_wal(tmp_path / "a") as wal, anyio.create_task_group() as tg:
            replicator = await _replicator(tg, wal, js, "a")
            seq = await publish_marker(js, STREAM, f"{PREFIX}.0", ReplicaBatch("a", 0, 1, 0), 0)
            replicator.adopt(0, 1, last_seq=seq, cursor=wal.last_lsn)
            servers[0].kill()
            await wal.append(_envelopes(range(3)), partition=0, epoch=1)
            assert replicator.pending(0) == 3
            await replicator.wait_room(0, 1, pending_max=4)  # under the bound: no wait
            with pytest.raises(TimeoutError), anyio.fail_after(0.5):
                await replicator.wait_room(0, 1, pending_max=3)
            servers[0].start()
            with anyio.fail_after(30):
                await replicator.wait_room(0, 1, pending_max=1)
            assert replicator.pending(0) == 0
            tg.cancel_scope.cancel()
        assert len(await _stream_ids(js, 0)) == 3
        await client.close()


async def test_a_takeover_publishes_records_of_any_earlier_epoch_that_never_reached_the_stream(
    tmp_path: Path,
) -> None:
    """Epoch 1 published records 1-2, not 3; the takeover of epoch 2 got as far as its marker, then failed.

    Taking epoch 3, record 3 is still this node's to publish: it was acknowledged AA once its sender's
    retry met it in the local log. (Only the previous epoch with a batch on the subject, 2, was looked
    at: record 3 was never published, and a cluster test found such a message missing.)
    """
    async with open_wal(tmp_path / "a") as wal:
        envelopes = _envelopes(range(4))
        first = await wal.append(envelopes[:2], partition=0, epoch=1)
        [late] = await wal.append(envelopes[2:3], partition=0, epoch=1)
        await wal.append(envelopes[3:], partition=1, epoch=1)  # another partition's: not this takeover's
        records = [ReplicaRecord(p.lsn, "t", e.message_id, e) for p, e in zip(first, envelopes, strict=False)]
        on_subject = [
            ReplicaBatch("a", 0, 1, 0),
            ReplicaBatch("a", 0, 1, first[-1].lsn, tuple(records)),
            ReplicaBatch("a", 0, 2, late.lsn),  # epoch 2's marker, its takeover failed after it
        ]
        cluster = Cluster(
            _config(), "a", wal, servers=[], security={}, adopt=await _adopter(wal, []), forwarded=_no_forwarding
        )
        orphans = await anyio.to_thread.run_sync(cluster.orphans, 0, 3, on_subject)
        assert [(r.lsn, r.message_id) for r in orphans] == [(late.lsn, envelopes[2].message_id)]
        # What the stream has, from any owner, is not missing.
        taken = ReplicaBatch("b", 0, 2, 9, (ReplicaRecord(1, "t", envelopes[2].message_id, envelopes[2]),))
        assert await anyio.to_thread.run_sync(cluster.orphans, 0, 3, [*on_subject, taken]) == []
