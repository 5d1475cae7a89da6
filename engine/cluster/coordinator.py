"""One node's part in the cluster: heartbeats, partition leases, takeover, handover, forwarding.

Every `renew_interval_s` the node writes its heartbeat, renews its leases
(compare-and-set on each key's revision), reads everyone's, and computes
the plan (`engine.cluster.partitions.plan`). It takes the free partitions the
plan gives it, and hands over those the plan gives another live node.

Taking a partition: win its lease (epoch + 1), write the epoch marker on its
subject (fencing out any older owner), read the subject into the local log
(the records of earlier owners; duplicates are answered by the log's
idempotency index), then serve. Handing one over: stop taking its messages,
let those in flight finish and replicate, then mark the lease released so
the new owner takes it at once. A node that cannot renew (the broker is
away, the process was paused) stops serving each lease `lease_ttl_s` after
its last successful renewal began, before anyone may take it over.

Messages for a partition served elsewhere are forwarded to its owner over
NATS request/reply (`vigil.node.<id>.ingest`); the source is answered with
the owner's answer, so it is acknowledged only once the owner made the
record durable.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from anyio.abc import TaskStatus
from nats.js.api import KeyValueConfig, Placement, StorageType, StreamConfig

from engine.cluster.leases import Freshness, Held, LeaseValue, MemberInfo, decode_lease, decode_member
from engine.cluster.partitions import partition_of, plan
from engine.cluster.replication import (
    FencedError,
    ReplicaBatch,
    Replicator,
    last_on_subject,
    publish_marker,
    read_sequenced,
    subject_of,
)
from engine.cluster.route_progress import RouteProgress
from engine.cluster.view import bucket_keys
from engine.core.errors import first_leaf
from engine.core.model import Envelope
from engine.infra.clock import monotonic, wall_now
from engine.infra.config import ClusterConfig
from engine.infra.nats_client import CONNECT_RETRY_S, DRIVER_ERRORS, connect_serving
from engine.infra.repeated_warning import RepeatedWarning
from engine.wal import LogRecord, WriteAheadLog

__all__ = ["Adopt", "Cluster", "ClusterStatistics", "Forwarded", "ingest_subject"]

_log = structlog.get_logger("vigil.cluster")
_ENCODE = msgspec.json.Encoder()
_FORWARDED_IN_FLIGHT_MAX = 256  # forwarded messages being answered at once (the lanes bound the work itself)
_FORWARDED_PENDING_MAX = 4096  # waiting in the subscription beyond those; more are dropped by nats-py, and retried

# Records of a partition taken over: append them to the local log and apply them.
# (partition, its batches, per route the ids of the messages it had settled before this node took over)
Adopt = Callable[[int, Sequence[ReplicaBatch], Mapping[str, frozenset[str]]], Awaitable[None]]
# A forwarded message: ingest it here, answer with the results (JSON).
Forwarded = Callable[[bytes, str], Awaitable[bytes]]
# A record asked of its partition's owner by another node (a FHIR read that came there): the request's
# bytes in, the answer's bytes out (both the node's to encode).
RecordRead = Callable[[bytes], Awaitable[bytes]]
_RECORD_READ: Final = "record"  # the Vigil-Kind header of a record read on a node's ingest subject


def ingest_subject(node: str) -> str:
    """Where a node takes messages forwarded to it."""
    return f"vigil.node.{node}.ingest"


@final
class ClusterStatistics(msgspec.Struct, frozen=True):
    """What `vigil status` shows of the cluster."""

    node: str
    nats: str
    serving: tuple[int, ...]
    taking_over: tuple[int, ...]
    members: tuple[str, ...]
    partitions: int
    replication_lag_records: int
    published_records: int
    forwarded_messages: int
    takeovers: int
    fenced: int
    # Each partition's lease as this node last read it: (partition, owner, epoch); owner "" when none holds it.
    owners: tuple[tuple[int, str, int], ...] = ()


@dataclass
class _Lease:
    held: Held
    serving: bool = False
    releasing: bool = False


@final
class Cluster:
    """A node's membership: run it in the node's task group; ask it which partitions this node serves."""

    def __init__(
        self,
        config: ClusterConfig,
        node: str,
        wal: WriteAheadLog,
        *,
        servers: Sequence[str],
        security: dict[str, object],
        adopt: Adopt,
        forwarded: Forwarded,
        record_read: RecordRead | None = None,
        route_marks: Callable[[], Mapping[str, int]] = dict,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.config = config
        self.node = node
        self._wal = wal
        self._servers = list(servers)
        self._security = security
        self._adopt = adopt
        self._forwarded = forwarded
        self._record_read = record_read
        self._route_marks = route_marks  # each route's settled mark here: its position, for takeovers
        self._route_progress: RouteProgress | None = None
        self._clock = clock
        self._leases: dict[int, _Lease] = {}
        self._lease_seen = Freshness(config.lease_ttl_s)
        self._member_seen = Freshness(config.lease_ttl_s)
        self._lease_values: dict[int, LeaseValue] = {}  # each partition's lease as last read (absent: none)
        self._members: dict[str, MemberInfo] = {}
        self._started_at = wall_now().isoformat(timespec="seconds")
        self._client: Any = None
        self._js: Any = None
        self._replicator: Replicator | None = None
        self._taking: set[int] = set()
        # Appends under way per partition, whatever their epoch: a takeover waits for an earlier epoch's
        # to end before it looks for records the stream lacks (one that ended later would go unseen).
        self._writing: Counter[int] = Counter()
        self._twin = False
        # During a takeover every sender's retry fails alike: one line a second, with the count.
        self._forward_failed = RepeatedWarning(_log, "cluster.forward_failed", interval_s=1.0, clock=clock)
        self.state = "connecting"
        self.forwarded_messages = 0
        self.takeovers = 0
        self.fenced = 0

    # -- what the node asks ------------------------------------------------------------

    def partition_of(self, envelope: Envelope) -> int:
        """A message's partition: its patient's, else its id's (so a redelivery lands in the same one)."""
        return partition_of(envelope.patient or envelope.message_id, self.config.partitions)

    def enter(self, partition: int) -> int | None:
        """Begin writing to a partition: its epoch while this node serves it, else None. Pair with `leave`."""
        lease = self._leases.get(partition)
        if lease is None or not lease.serving or lease.releasing or not lease.held.valid(self._clock()):
            return None
        self._writing[partition] += 1
        return lease.held.epoch

    def leave(self, partition: int) -> None:
        self._writing[partition] -= 1

    def serves(self, partition: int) -> bool:
        lease = self._leases.get(partition)
        return lease is not None and lease.serving and lease.held.valid(self._clock())

    def owner(self, partition: int) -> str | None:
        """The live owner of a partition as this node last saw it (None: none now)."""
        owner = self._seen_owner(partition)
        return owner if owner and owner in self._live_members() else None

    def _seen_owner(self, p: int) -> str:
        """The owner in the lease as last read ("" when released, never taken, or unreadable)."""
        value = self._lease_values.get(p)
        return value.owner if value is not None else ""

    async def wait_room(self, partition: int, epoch: int) -> None:
        """Return once the partition's replication is not too far behind (`cluster.pending_records_max`).

        Raises:
            FencedError: the partition was lost meanwhile.
        """
        if self._replicator is None:
            raise FencedError("not connected to the cluster")
        await self._replicator.wait_room(partition, epoch, self.config.pending_records_max)

    async def wait_replicated(self, partition: int, epoch: int, lsn: int) -> None:
        """Return once the record is in the stream.

        Raises:
            FencedError: the partition was lost first (the source should retry: the new owner takes it).
        """
        if self._replicator is None:
            raise FencedError("not connected to the cluster")
        await self._replicator.wait_replicated(partition, epoch, lsn)

    async def forward(self, owner: str, raw: bytes, source: str) -> list[dict[str, Any]] | None:
        """Send a message to its partition's owner: its answers (one per message in `raw`), or None without one."""
        reply = await self._ask_owner(owner, raw, {"Vigil-Source": source, "Vigil-From": self.node})
        if reply is None:
            return None
        self.forwarded_messages += 1
        answers = msgspec.json.decode(reply)
        return answers if isinstance(answers, list) else None

    async def read_record(self, owner: str, request: bytes) -> bytes | None:
        """Ask a partition's owner for a record (`RecordRead` there); None when it did not answer in time."""
        return await self._ask_owner(owner, request, {"Vigil-Kind": _RECORD_READ, "Vigil-From": self.node})

    async def _ask_owner(self, owner: str, body: bytes, headers: dict[str, str]) -> bytes | None:
        """A request on the owner's ingest subject; None (warned, once a second) when it went unanswered."""
        if self._client is None:
            return None
        try:
            reply = await self._client.request(
                ingest_subject(owner), body, timeout=self.config.forward_timeout_s, headers=headers
            )
        except DRIVER_ERRORS as exc:
            self._forward_failed.warn(owner=owner, error=type(exc).__name__)
            return None
        return bytes(reply.data)

    def statistics(self) -> ClusterStatistics:
        serving = tuple(sorted(p for p, lease in self._leases.items() if lease.serving))
        return ClusterStatistics(
            node=self.node,
            nats=self.state,
            serving=serving,
            taking_over=tuple(sorted(self._taking)),
            members=tuple(sorted(self._live_members())),
            partitions=self.config.partitions,
            replication_lag_records=self._replicator.lag_records() if self._replicator else 0,
            published_records=self._replicator.published_records if self._replicator else 0,
            forwarded_messages=self.forwarded_messages,
            takeovers=self.takeovers,
            fenced=self.fenced,
            owners=tuple(
                (p, value.owner if (value := self._lease_values.get(p)) else "", value.epoch if value else 0)
                for p in range(self.config.partitions)
            ),
        )

    # -- running -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Join and stay in the cluster until cancelled; on a clean stop, hand every partition back.

        The cluster is a part the node can lose without stopping (invariant 6):
        when a session with the broker fails in a way not handled below it,
        every partition is given up at once (it may no longer be ours), the
        failure is logged, and a new session begins after a pause.
        """
        task_status.started()  # the node serves its sources at once; partitions come as leases are won
        failures = 0
        while True:
            try:
                await self._session()
            # Any failure (alone or in a task group's ExceptionGroup), even a bug: the node's local log,
            # its sources and its actors must outlive the cluster part. Cancellation is not caught.
            except Exception as exc:  # noqa: BLE001
                failures += 1
                delay = CONNECT_RETRY_S[min(failures, len(CONNECT_RETRY_S) - 1)]
                leaf = first_leaf(exc)
                _log.error(
                    "cluster.session_failed",
                    error=type(leaf).__name__,
                    reason=str(leaf)[:200],
                    at=_where(leaf),
                    retry_in_s=delay,
                )
                self._give_up_all("the session with the broker failed")
                self.state = "restarting"
                await anyio.sleep(delay)

    async def _session(self) -> None:
        """One connection's life: the stream and buckets, the replicator, the forwarding inbox, the ticks."""
        self._client = await connect_serving(
            self._servers,
            name=f"vigil-cluster-{self.node}",
            security=self._security,
            log=_log,
            events="cluster",
            on_state=self._set_state,
            reconnect_time_wait_s=0.2,
        )
        try:
            # Leases, heartbeats and takeovers ask short questions with short timeouts, so a round or a
            # takeover stuck behind a leader election tries again soon after it ends; replication waits longer.
            control_timeout_s = min(self.config.publish_timeout_s, self.config.lease_ttl_s / 2)
            self._js = self._client.jetstream(timeout=control_timeout_s)
            leases, members, routes = await self._prepare(self._js)
            self._replicator = Replicator(
                self._client.jetstream(timeout=self.config.publish_timeout_s),  # each publish waits this long
                node=self.node,
                stream=self.config.stream,
                subject_prefix=self.config.subject_prefix,
                records_max=self.config.publish_records_max,
                valid=self._may_write,
            )
            self._route_progress = RouteProgress(
                routes,
                marks=self._route_marks,
                positions=self._positions,
                interval_s=self.config.route_progress_interval_s,
            )
            sub = await self._client.subscribe(ingest_subject(self.node), pending_msgs_limit=_FORWARDED_PENDING_MAX)
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(self._replicator.run)
                    self._wal.on_durable = self._replicator.on_durable
                    tg.start_soon(self._coordinate, leases, members, tg)
                    tg.start_soon(self._serve_forwarded, sub)
                    tg.start_soon(self._route_progress.run)
            finally:
                self._wal.on_durable = None
                with anyio.move_on_after(2, shield=True):
                    await sub.unsubscribe()
                with anyio.move_on_after(self.config.lease_ttl_s, shield=True):
                    await self._leave(leases, members)
        finally:
            with anyio.move_on_after(2, shield=True):
                await self._client.close()

    def _give_up_all(self, why: str) -> None:
        for p in list(self._leases):
            self._lose(p, why)
        self._taking.clear()

    def _set_state(self, state: str) -> None:
        self.state = state

    def _positions(self) -> dict[int, tuple[int, int]]:
        """Each served partition's (stream sequence, local LSN) pair (see `Replicator.position`)."""
        replicator = self._replicator
        if replicator is None:
            return {}
        served = (p for p, lease in self._leases.items() if lease.serving)
        return {p: pair for p in served if (pair := replicator.position(p)) is not None}

    async def _prepare(self, js: Any) -> tuple[Any, Any, Any]:
        """The stream and the buckets (made if absent); a loud warning when the stream is weaker than configured."""
        config = self.config
        while True:
            try:
                await self._ensure_stream(js)
                leases = await self._bucket(js, f"{config.bucket_prefix}_leases")
                members = await self._bucket(js, f"{config.bucket_prefix}_members")
                routes = await self._bucket(js, f"{config.bucket_prefix}_routes")
            except DRIVER_ERRORS as exc:
                # A cluster electing its meta leader answers "unavailable" for a few seconds.
                _log.warning("cluster.prepare_failed", error=type(exc).__name__, reason=str(exc)[:200])
                await anyio.sleep(0.5)
                continue
            return leases, members, routes

    async def _ensure_stream(self, js: Any) -> None:
        config = self.config
        try:
            info = await js.stream_info(config.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=config.stream,
                    subjects=[f"{config.subject_prefix}.>"],
                    num_replicas=config.replicas,
                    storage=StorageType.FILE,
                    duplicate_window=120.0,
                    allow_direct=True,
                    placement=self._placement(),
                )
            )
            _log.info("cluster.stream_created", stream=config.stream, replicas=config.replicas)
            return
        replicas = info.config.num_replicas or 1
        if replicas < config.replicas or info.config.storage != StorageType.FILE:
            _log.error(
                "cluster.replication_weaker_than_configured",
                stream=config.stream,
                replicas=replicas,
                configured=config.replicas,
                storage=str(info.config.storage),
            )

    async def _bucket(self, js: Any, name: str) -> Any:
        """A key-value bucket, made (one value per key, file storage, the configured replicas) if absent."""
        try:
            return await js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            config = KeyValueConfig(
                bucket=name,
                history=1,
                replicas=self.config.replicas,
                storage=StorageType.FILE,
                placement=self._placement(),
            )
            return await js.create_key_value(config)

    def _placement(self) -> Placement | None:
        return Placement(cluster=self.config.placement) if self.config.placement else None

    async def _coordinate(self, leases: Any, members: Any, tg: Any) -> None:
        interval = self.config.renew_interval_s
        while True:
            started = self._clock()
            await self._tick(leases, members, tg)
            self._expire()
            await anyio.sleep(max(0.0, interval - (self._clock() - started)))

    async def _tick(self, leases: Any, members: Any, tg: Any) -> None:
        """One round: renew first (what keeps this node serving), the heartbeat, what the others hold, the plan.

        A step the broker cannot answer now (a leader election, a lost
        server) is skipped for this round; the next round tries again.
        """
        await self._renew(leases)
        await _attempt("heartbeat", self._heartbeat(members))
        if not await _attempt("members", self._read_members(members)):
            return
        await self._read_leases(leases)
        now = self._clock()
        live = self._live_members()
        owners = {p: self._current_owner(p, now) for p in range(self.config.partitions)}
        planned = plan(self.config.partitions, live, owners)
        for p, owner in planned.items():
            mine = self._leases.get(p)
            if owner == self.node and mine is None and p not in self._taking and self._free(p, now):
                self._taking.add(p)
                tg.start_soon(self._take, leases, p)
            elif owner != self.node and mine is not None and mine.serving and not mine.releasing:
                mine.releasing = True
                tg.start_soon(self._hand_over, leases, p, owner)

    def _current_owner(self, p: int, now: float) -> str | None:
        if p in self._leases:
            return self.node
        owner = self._seen_owner(p)
        return owner if owner and self._lease_seen.fresh(_lease_key(p), now) else None

    def _free(self, p: int, now: float) -> bool:
        """Whether a partition's lease may be taken: none, released, ours from before a restart, or expired."""
        owner = self._seen_owner(p)
        return not owner or owner == self.node or not self._lease_seen.fresh(_lease_key(p), now)

    def _live_members(self) -> set[str]:
        now = self._clock()
        live = {m for m in self._members if self._member_seen.fresh(m, now)}
        live.add(self.node)
        return live

    async def _heartbeat(self, members: Any) -> None:
        info = MemberInfo(
            node=self.node,
            started_at=self._started_at,
            serving=tuple(sorted(p for p, lease in self._leases.items() if lease.serving)),
            last_lsn=self._wal.last_lsn,
            replication_lag_records=self._replicator.lag_records() if self._replicator else 0,
            nats=self.state,
        )
        await members.put(self.node, _ENCODE.encode(info))

    async def _renew(self, leases: Any) -> None:
        async def one(p: int, lease: _Lease) -> None:
            started = self._clock()
            value = _ENCODE.encode(LeaseValue(self.node, lease.held.epoch))
            try:
                revision = await leases.update(_lease_key(p), value, last=lease.held.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._lose(p, "another node holds its lease now")
                return
            except DRIVER_ERRORS as exc:
                _log.warning("cluster.renew_failed", partition=p, error=type(exc).__name__)
                return
            if self._leases.get(p) is lease:
                lease.held.revision = revision
                lease.held.valid_until = started + self.config.lease_ttl_s

        async with anyio.create_task_group() as tg:
            for p, lease in list(self._leases.items()):
                tg.start_soon(one, p, lease)

    async def _read_members(self, members: Any) -> None:
        now = self._clock()
        for key in await bucket_keys(self._js, f"{self.config.bucket_prefix}_members"):
            try:
                entry = await members.get(key)
            except nats.js.errors.KeyNotFoundError:
                self._member_seen.forget(key)
                self._members.pop(key, None)
                continue
            info = decode_member(entry.value)
            if info is not None and key == self.node and info.started_at != self._started_at and not self._twin:
                # Another process writes this node's heartbeat: two nodes configured with one id would take
                # each other's leases in turn (fencing keeps that safe, not useful). Said once, loudly.
                self._twin = True
                _log.error("cluster.node_id_in_use", node=self.node, other_started_at=info.started_at)
            if info is not None:
                self._members[key] = info
                self._member_seen.observe(key, int(entry.revision), now)

    async def _read_leases(self, leases: Any) -> None:
        now = self._clock()

        async def one(p: int) -> None:
            key = _lease_key(p)
            try:
                entry = await leases.get(key)
            except nats.js.errors.KeyNotFoundError:
                self._lease_values.pop(p, None)
                self._lease_seen.forget(key)
                return
            except DRIVER_ERRORS:
                return  # unread this tick: what was seen stands, and its age keeps growing
            value = decode_lease(entry.value)
            if value is None:
                self._lease_values.pop(p, None)  # a foreign value: no owner, and no epoch to go on from
            else:
                self._lease_values[p] = value
            self._lease_seen.observe(key, int(entry.revision), now)

        async with anyio.create_task_group() as tg:
            for p in range(self.config.partitions):
                tg.start_soon(one, p)

    def _may_write(self, partition: int, epoch: int) -> bool:
        lease = self._leases.get(partition)
        return lease is not None and lease.held.epoch == epoch and lease.held.valid(self._clock())

    def _expire(self) -> None:
        """Stop serving every lease past its validity: another node may take it from now on."""
        now = self._clock()
        for p, lease in list(self._leases.items()):
            if not lease.held.valid(now):
                self._lose(p, "its lease could not be renewed in time")
        if self._replicator is not None:
            for p in self._replicator.fenced:
                self._lose(p, "fenced out by a newer owner")
                self.fenced += 1
            self._replicator.fenced.clear()

    def _lose(self, p: int, why: str) -> None:
        lease = self._forget(p)
        if lease is not None:
            _log.warning("cluster.partition_lost", partition=p, epoch=lease.held.epoch, reason=why)

    def _forget(self, p: int) -> _Lease | None:
        """Stop holding a partition here (its writers and waiters learn at once); the lease it was, if any."""
        lease = self._leases.pop(p, None)
        if lease is not None and self._replicator is not None:
            self._replicator.drop(p)
        return lease

    async def _release(self, leases: Any, p: int, lease: _Lease) -> bool:
        """Mark a lease released (owner "", same epoch) so the next owner need not wait it out; False if it failed."""
        try:
            value = _ENCODE.encode(LeaseValue("", lease.held.epoch))
            await leases.update(_lease_key(p), value, last=lease.held.revision)
        except DRIVER_ERRORS as exc:
            _log.warning("cluster.release_failed", partition=p, error=type(exc).__name__)
            return False
        return True

    # -- taking over and handing over ----------------------------------------------------

    async def _take(self, leases: Any, p: int) -> None:
        """Win the lease, fence the subject, read it into the local log, serve."""
        began = self._clock()
        key = _lease_key(p)
        try:
            held = await self._win(leases, p, key, began)
            if held is None:
                return
            lease = _Lease(held)
            self._leases[p] = lease
            subject = subject_of(self.config.subject_prefix, p)
            seq, _last = await last_on_subject(self._js, self.config.stream, subject)
            marker = ReplicaBatch(self.node, p, held.epoch, self._wal.last_lsn)
            marker_seq = await publish_marker(self._js, self.config.stream, subject, marker, seq)
            sequenced = await read_sequenced(self._js, self.config.stream, subject, until_seq=marker_seq)
            batches = [b for _, b in sequenced]
            if not await self._earlier_writes_ended(p):
                self._lose(p, "appends of its earlier epoch were still under way")
                return
            orphans = await anyio.to_thread.run_sync(self.orphans, p, held.epoch, batches)
            assert self._route_progress is not None
            settled = await self._route_progress.settled_elsewhere(p, sequenced)
            await self._adopt(p, [b for b in batches if b.records], settled)
            if self._leases.get(p) is not lease or not held.valid(self._clock()):
                return
            assert self._replicator is not None
            self._replicator.adopt(p, held.epoch, last_seq=marker_seq, cursor=self._wal.last_lsn)
            self._route_progress.taken(p)
            if orphans and not await self._replicator.publish_backlog(p, orphans):
                self._lose(p, "its unreplicated records could not be published")
                return
            lease.serving = True
            self.takeovers += 1
            records = sum(len(b.records) for b in batches)
            took_ms = round((self._clock() - began) * 1000, 1)
            _log.info("cluster.partition_serving", partition=p, epoch=held.epoch, records=records, took_ms=took_ms)
        except FencedError as exc:
            _log.warning("cluster.take_fenced", partition=p, reason=str(exc))
            self._lose(p, "fenced while taking it over")
        except DRIVER_ERRORS as exc:
            _log.warning("cluster.take_failed", partition=p, error=type(exc).__name__, reason=str(exc)[:200])
            self._lose(p, "taking it over failed")
        finally:
            self._taking.discard(p)

    def orphans(self, p: int, epoch: int, batches: Sequence[ReplicaBatch]) -> list[LogRecord]:
        """This node's records of the partition from any earlier epoch that never reached the stream.

        Written just before a crash or an outage, or while a takeover failed
        half-way (its marker on the subject, its records not). The look starts
        after the last record this node published there in any epoch: within
        an epoch records go out in log order, and each takeover looks at every
        earlier epoch once their appends have ended, so none below it is
        missing. A node that never published a record there looks from its
        first marker. What the stream has (by message id and digest, from any
        owner) is not missing.
        """
        mine = [b for b in batches if b.node == self.node and b.epoch < epoch]
        if not mine:
            return []
        published = [b.last_lsn for b in mine if b.records]
        after = max(published) if published else min(b.last_lsn for b in mine)
        # A message is its id and content (a reused control id is another message).
        present = {(r.message_id, r.envelope.digest) for b in batches for r in b.records}
        return [
            r
            for r in self._wal.read_from(after + 1)
            if r.partition == p and r.epoch < epoch and (r.message_id, r.digest) not in present
        ]

    async def _earlier_writes_ended(self, p: int) -> bool:
        """Wait (within a lease's time) for appends begun under an earlier epoch to end, durable or refused.

        Their waiters hear at once that the partition was lost, so they end
        quickly; False if they did not.
        """
        with anyio.move_on_after(self.config.lease_ttl_s):
            while self._writing[p] > 0:  # noqa: ASYNC110 -- a short, bounded poll of a counter other tasks move
                await anyio.sleep(0.005)
            return True
        return False

    async def _win(self, leases: Any, p: int, key: str, began: float) -> Held | None:
        """The lease by compare-and-set on the revision judged free (epoch + 1); None when another node won it."""
        revision = self._lease_seen.revision(key)
        seen = self._lease_values.get(p)
        epoch = (seen.epoch if seen is not None else 0) + 1
        value = _ENCODE.encode(LeaseValue(self.node, epoch))
        try:
            if revision is None:
                new_revision = await leases.create(key, value)
            else:
                # Only if it is still what we judged free: a renewal since then means its owner lives.
                new_revision = await leases.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        return Held(p, epoch, int(new_revision), began + self.config.lease_ttl_s)

    async def _hand_over(self, leases: Any, p: int, to: str) -> None:
        """Orderly handover: finish and replicate what is in flight, then release the lease for `to`."""
        lease = self._leases.get(p)
        if lease is None:
            return
        with anyio.move_on_after(self.config.lease_ttl_s):
            # A short, bounded poll of two counters other tasks move (an event per counter is not worth it here).
            while self._writing[p] > 0 or self._unreplicated(p):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        if self._leases.get(p) is not lease:
            return
        self._forget(p)
        if await self._release(leases, p, lease):
            _log.info("cluster.partition_handed_over", partition=p, to=to)

    def _unreplicated(self, p: int) -> bool:
        return self._replicator is not None and self._replicator.pending(p) > 0

    async def drain(self) -> None:
        """Before a clean stop: let the local log's records reach the stream (bounded by the caller's deadline)."""
        while self._replicator is not None and self._replicator.lag_records() > 0 and self.state == "connected":  # noqa: ASYNC110
            await anyio.sleep(0.01)  # a short, bounded poll of the publishers' progress

    async def _leave(self, leases: Any, members: Any) -> None:
        """A clean stop: every partition released (its successor need not wait out the lease), the heartbeat gone."""
        for p in list(self._leases):
            lease = self._forget(p)
            if lease is not None:
                await self._release(leases, p, lease)
        try:
            await members.delete(self.node)
        except DRIVER_ERRORS:
            return
        _log.info("cluster.left", node=self.node)

    async def _serve_forwarded(self, sub: Any) -> None:
        """Messages other nodes forward here, each on its own (a slow one never holds the rest), at most a bound."""
        slots = anyio.Semaphore(_FORWARDED_IN_FLIGHT_MAX)
        async with anyio.create_task_group() as tg:
            async for msg in sub.messages:
                await slots.acquire()
                tg.start_soon(self._answer_forwarded, msg, slots)

    async def _answer_forwarded(self, msg: Any, slots: anyio.Semaphore) -> None:
        try:
            headers = msg.headers or {}
            if headers.get("Vigil-Kind") == _RECORD_READ:
                if self._record_read is None:
                    return  # this node reads no records for others: the asker times out and says so
                reply = await self._record_read(msg.data)
            else:
                reply = await self._forwarded(msg.data, f"forwarded:{headers.get('Vigil-From', '?')}")
            if msg.reply:
                await msg.respond(reply)
        except DRIVER_ERRORS as exc:
            # The sender's request times out and it answers its source "retry": nothing is lost.
            _log.warning("cluster.forward_answer_failed", error=type(exc).__name__)
        finally:
            slots.release()


async def _attempt(step: str, work: Awaitable[None]) -> bool:
    """One step of a round; a broker error is logged and the step skipped (False)."""
    try:
        await work
    except DRIVER_ERRORS as exc:
        _log.warning("cluster.tick_failed", step=step, error=type(exc).__name__)
        return False
    return True


def _where(exc: BaseException) -> str:
    """The innermost line of Vigil's own code an exception passed through (file:line), for the log."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/engine/" in f.filename]
    return f"{frames[-1].filename.rsplit('/engine/', 1)[1]}:{frames[-1].lineno}" if frames else "?"


def _lease_key(p: int) -> str:
    return f"p{p}"
