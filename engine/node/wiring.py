"""The node: the one place that wires every part together, and the supervision tree that runs them.

A message's way: a source (`engine.ingress`) reads it and calls intake
(`engine.node.intake`), which classifies it from the raw bytes and admits it
to its lane (waiting while the lane is full, so a full lane stops the
reading: backpressure); a lane worker (`engine.node.lane_worker`) parses and
maps it and appends it to the write-ahead log, and only then is the source
answered (invariant 1): `AA`/`CA` once durable, a duplicate too (same LSN, no
second append); `AR`/`CR` with an ERR segment for a message that can never
be accepted (it goes to quarantine with its bytes, invariant 2); `AE`/`CE`
for a temporary failure (disk full, the log stopped, an ACK that waited too
long) so the sender retries. After the ACK the record goes to its patient's
actor and the read side (`engine.node.fanout`).

The parts run as children of one supervisor (`actors.Supervisor`), started
in this order and stopped in reverse: the log, the patient records, the
lanes, the read side, each route (`engine.routes`), the message search
index (`engine.search`), the cluster, the admin endpoint, the summaries,
the collector, the alerts (`engine.alerts`), the HTTP face, then the
sources. A part that crashes is restarted alone, within its restart
allowance (`[supervision]`); past it, the node stops with one line naming
the part and its error. The log is never restarted: a failed write is final.

Stopping (SIGTERM/SIGINT, or the end of stdin): the sources stop first, then
in-flight messages finish within `node.stop_deadline_s`, the patient actors
are passivated (snapshots), and the rest stop; the log closes last
(checkpoint, saved indexes).
"""

from __future__ import annotations

import functools
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, final

import anyio
import msgspec
import structlog
from anyio.abc import ByteStream, TaskStatus

from actors import ChildSpec, ChildStatus, PatientActors, RecordView, Restart, Supervisor
from engine.alerts import AlertWatch, Webhook
from engine.auth import ApiClient, AuthEndpoint, AuthService, AuthStore
from engine.cluster import Cluster, ReplicaBatch
from engine.core.decode import Decoder
from engine.core.errors import ConfigError, MessageError, VigilError, first_leaf
from engine.core.model import Envelope, Kind
from engine.core.outcome import IngestResult
from engine.infra.admin_socket import AdminError, AdminServer, Handler
from engine.infra.clock import wall_now
from engine.infra.collector import Collector
from engine.infra.config import Config
from engine.infra.telemetry import RouteLane, Telemetry
from engine.infra.tls import client_context, nats_security
from engine.ingress.drop_folder import DropFolder
from engine.ingress.mllp_answers import MLLPAnswers
from engine.ingress.mllp_listener import MLLPServer
from engine.ingress.nats_source import NatsSource
from engine.ingress.parse_pool import ParsePool
from engine.node.alert_observations import AlertObservations
from engine.node.backup_requests import BackupRequests
from engine.node.fanout import Fanout
from engine.node.from_config import (
    admin_listener,
    join_cluster,
    mllp_server,
    read_side,
    refuse_unbuilt,
    warn_if_unkeyed,
)
from engine.node.housekeeping import summarise, until_stopped
from engine.node.parts import Parts
from engine.node.quarantine_desk import QuarantineDesk, refusal_of
from engine.node.quarantine_requests import QuarantineRequests
from engine.node.record_source import LogRecordSource, PoisonQuarantine
from engine.node.refusals import Refusals
from engine.node.requests import NodeRequests
from engine.node.review_requests import ReviewRequests
from engine.node.route_requests import RouteRequests
from engine.projections import ProjectionRunner, dsn_of
from engine.retention import ArchiveFolder, Archiver
from engine.routes import Routes
from engine.search import INDEX_FILE, SearchFollower
from engine.wal import (
    OSFiles,
    PackedSnapshotStore,
    Progress,
    Quarantine,
    WriteAheadLog,
    audit_key_from_env,
    open_wal,
)
from lanes import Classifier, LaneStatistics

__all__ = ["IngestResult", "Node"]

_log = structlog.get_logger("vigil.node")

# Stopped first, in reverse order: nothing new comes in while in-flight messages finish.
_SOURCES = ("mllp", "drop_folder", "nats", "http")


@final
class Node:
    """One Vigil node over a data directory; `await node.run(...)` until stopped."""

    def __init__(
        self,
        config: Config,
        data_dir: Path,
        *,
        clock: Callable[[], datetime] | None = None,
        recovery_progress: Progress | None = None,
        config_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self._config_dir = config_dir or Path()
        self._recovery_progress = recovery_progress
        self._clock = clock or wall_now
        self._decoder = Decoder(Classifier(config.lanes.rules), config.ingest.charsets())
        ingest = config.ingest
        self._parse_pool = ParsePool(
            config.lanes.rules, ingest.parse_workers, self._decoder.charsets, nice=ingest.parse_workers_nice
        )
        self._refusals = Refusals(Quarantine(data_dir / "quarantine", OSFiles()))
        self._telemetry = Telemetry(self._lane_depths, self._read_side_lag, self._route_lanes)
        self._projections: ProjectionRunner | None = None
        self._fanout = Fanout()
        self._routes = Routes(
            config.routes,
            data_dir / "routes",
            config_dir=self._config_dir,
            tls_context=client_context,
            nats_servers=config.nats.servers,
            nats_security=lambda: nats_security(config.nats, self._config_dir),
            charsets=self._decoder.charsets,
        )
        self._fanout.routes = self._routes
        self._cluster: Cluster | None = None
        self._nats: NatsSource | None = None
        self._search: SearchFollower | None = None
        self._alerts: AlertWatch | None = None
        self._archiver: Archiver | None = None
        self._records: LogRecordSource | None = None  # the patient actors' (retention snapshots through it)
        self._mllp_port: int | None = None
        self._mllp_server: MLLPServer | None = None
        # One ACK builder for MLLP and HTTP: each ACK's own MSH-10 (`NODE-n`) from one counter, never twice.
        self._answers = MLLPAnswers(self._ingest_one, config.node.id, self._clock)
        self._parts: Parts | None = None
        self._supervisor: Supervisor | None = None
        self._handlers: dict[str, Handler] = {}
        self._requests: NodeRequests | None = None
        self._auth: AuthEndpoint | None = None
        self._audit_keyed = False
        self._stop_requested = anyio.Event()
        self._started = 0.0
        self._mllp_state = "off"  # what `vigil status` says of the MLLP listener
        self.admin_port: int | None = None  # the admin endpoint's TCP port, when `[admin] listen` is set
        self.http_port: int | None = None  # the HTTP face's port, when `[http] listen` is set

    # -- running --------------------------------------------------------------------

    async def run(
        self,
        *,
        mllp: tuple[str, int] | None = None,
        stdin: bytes | None = None,
        watch: Path | None = None,
        mllp_tls: ssl.SSLContext | None = None,
        task_status: TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED,
    ) -> list[IngestResult]:
        """Serve until SIGTERM/SIGINT (MLLP), or until the stdin bytes are all answered.

        `task_status.started()` reports the bound MLLP port once the node is ready.
        With `mllp_tls`, the MLLP listener speaks only TLS.
        Returns the stdin results, in order.

        Raises:
            SupervisorGaveUp: a part kept failing past its restart allowance.
            ConfigError: a part met a configuration mistake (never restarted: it would fail again).
        """
        refuse_unbuilt(self.config)
        sys.setswitchinterval(self.config.node.switch_interval_ms / 1000)
        # Its processes import while the log is recovered. Not for a small stdin input: a worker
        # still importing holds the process's exit back by most of a second.
        large_stdin = stdin is not None and stdin.count(b"MSH") >= self.config.ingest.parse_pool_messages_min
        nats = stdin is None and bool(self.config.nats.servers and self.config.nats.subjects)
        served = mllp is not None or watch is not None or nats or bool(self.config.http.listen)
        if large_stdin or served:  # a served source may send a large message
            self._parse_pool.start()
        try:
            store = await anyio.to_thread.run_sync(AuthStore.open_private, self.data_dir)
            try:
                return await self._supervised(store, mllp, stdin, watch, mllp_tls, nats=nats, task_status=task_status)
            except BaseExceptionGroup as group:
                # One error a caller can catch (SupervisorGaveUp, ConfigError), not the task groups' nesting.
                error = first_leaf(group)
                if not isinstance(error, VigilError):
                    raise
                raise error from error.__cause__
            finally:
                # After the tree: the sessions' last activity was flushed as the admin child ended.
                await anyio.to_thread.run_sync(store.close)
        finally:
            self._parse_pool.close()

    async def _supervised(
        self,
        store: AuthStore,
        mllp: tuple[str, int] | None,
        stdin: bytes | None,
        watch: Path | None,
        mllp_tls: ssl.SSLContext | None,
        *,
        nats: bool,
        task_status: TaskStatus[int | None],
    ) -> list[IngestResult]:
        self._audit_keyed = warn_if_unkeyed(self.config)
        service = await anyio.to_thread.run_sync(AuthService, store, self.config.auth)  # it reads the live sessions
        self._auth = AuthEndpoint(service, self._record_audit, node=self.config.node.id)
        children = self._children(mllp, watch, mllp_tls, nats=nats)
        settings = self.config.supervision
        self._supervisor = supervisor = Supervisor(
            children,
            intensity=settings.intensity,
            period_s=settings.period_s,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
            name="node",
            escalate=(ConfigError,),
        )
        results: list[IngestResult] = []
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            self._started = anyio.current_time()
            task_status.started(self._mllp_port)
            _log.info("node.ready", mllp_port=self._mllp_port, http_port=self.http_port, last_lsn=self.wal.last_lsn)
            if stdin is not None:
                results = await self.parts.intake.ingest_stream(stdin, "stdin")
            else:
                await until_stopped(self._stop_requested)
            await self._stop(supervisor)
        return results

    def _children(
        self, mllp: tuple[str, int] | None, watch: Path | None, mllp_tls: ssl.SSLContext | None, *, nats: bool
    ) -> list[ChildSpec]:
        """The supervision tree's children, in start order; sources last, so they stop first."""
        children = [
            # A failed write is final for the process: the log allows no restart (`engine.wal.errors`).
            ChildSpec("log", self._run_log, Restart.TRANSIENT, intensity=0),
            self._child("patients", self._run_patients),
            self._child("lanes", self._run_lanes),
        ]
        if dsn_of(self.config.projections) is not None:
            children.append(self._child("projections", self._run_projections))
        children += [
            self._child(f"route:{name}", functools.partial(self._routes.run, name, lambda: self.wal))
            for name in self._routes.configs
        ]
        if self.config.search.enabled:
            self._search = SearchFollower(self.data_dir / INDEX_FILE, lambda: self.wal, self.config.search, self._busy)
            children.append(self._child("search", self._search.run))
        if self.config.cluster.enabled:
            children.append(self._child("cluster", self._run_cluster))
        if self.config.retention.enabled:
            children.append(self._child("retention", self._run_retention))
        children += [
            self._child("admin", self._run_admin),
            self._child("summaries", self._summaries),
            self._child("collector", Collector(self.config.collector, self._busy).run),
            self._child("alerts", self._run_alerts),
        ]
        if self.config.http.listen:
            children.append(self._child("http", self._run_http))
        if mllp is not None:
            server = self._mllp_server = mllp_server(self.config, self._answers, mllp_tls)
            children.append(self._child("mllp", functools.partial(self._run_mllp, server, mllp)))
        if watch is not None:
            children.append(self._child("drop_folder", functools.partial(self._run_drop_folder, watch)))
        if nats:
            children.append(self._child("nats", self._run_nats))
        return children

    def _child(self, name: str, start: Callable[..., Awaitable[Any]]) -> ChildSpec:
        own = self.config.supervision.children.get(name)
        if own is None:
            return ChildSpec(name, start)
        return ChildSpec(name, start, intensity=own.intensity, period_s=own.period_s)

    # -- the children -----------------------------------------------------------------

    async def _run_log(self, *, task_status: TaskStatus[None]) -> None:
        """The log, and the parts made over it (intake, the lane worker, the scheduler)."""
        key = audit_key_from_env(self.config.audit.key_env)
        async with open_wal(
            self.data_dir / "wal", self.config.wal, audit_key=key, progress=self._recovery_progress
        ) as wal:
            wal.on_control_id_reused = lambda: self._telemetry.reused_control_ids.add(1)
            self._projections = self._fanout.projections = read_side(self.config, wal, self._config_dir, self._busy)
            if self.config.cluster.enabled:
                self._cluster = join_cluster(
                    self.config,
                    wal,
                    self._config_dir,
                    adopt=self._adopt_partition,
                    forwarded=self._answer_forwarded,
                    route_marks=self._routes.marks,
                    record_read=self._answer_record_read,
                )
            self._parts = Parts.over(
                wal,
                self.config,
                self._decoder,
                self._parse_pool,
                refusals=self._refusals,
                fanout=self._fanout,
                telemetry=self._telemetry,
                clock=self._clock,
                cluster=self._cluster,
            )
            assert self._auth is not None
            self._requests = NodeRequests(
                self.config, wal, self._auth, self._fanout, cluster=self._cluster, report=self._report
            )
            desk = QuarantineDesk(
                self._refusals.quarantine, self._parts.intake.ingest_stream, refusal_of(self._decoder)
            )
            self._handlers = {
                **self._requests.handlers(),
                **RouteRequests(self._auth, self._routes).handlers(),
                **QuarantineRequests(self._auth, desk).handlers(),
                **ReviewRequests(self.config, self._config_dir, wal, self._auth).handlers(),
                **BackupRequests(self._auth, self.data_dir, wal, self.config.node.id).handlers(),
            }
            task_status.started()
            await anyio.sleep_forever()

    async def _run_patients(self, *, task_status: TaskStatus[None]) -> None:
        """The patient actors; a restart begins with none active (each is rebuilt from its snapshot and the log)."""
        wal = self.wal
        snapshots = await anyio.to_thread.run_sync(PackedSnapshotStore, self.data_dir / "snapshots", OSFiles())
        records = LogRecordSource(wal, snapshots)
        actors = PatientActors(
            records,
            PoisonQuarantine(wal, self._refusals.quarantine),
            idle_timeout_s=self.config.actors.idle_timeout_s,
            active_max=self.config.actors.active_max,
            snapshot_min_records=self.config.actors.snapshot_min_records,
        )
        self._fanout.actors = actors
        self._records = records
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(actors.run)
                task_status.started()
        finally:
            if self._fanout.actors is actors:
                self._fanout.actors = None
            if self._records is records:
                self._records = None
            snapshots.close()

    async def _run_lanes(self, *, task_status: TaskStatus[None]) -> None:
        await self.parts.scheduler.run(task_status=task_status)

    async def _run_projections(self, *, task_status: TaskStatus[None]) -> None:
        assert self._projections is not None
        await self._projections.run(task_status=task_status)

    async def _run_cluster(self, *, task_status: TaskStatus[None]) -> None:
        assert self._cluster is not None
        await self._cluster.run(task_status=task_status)

    async def _run_retention(self, *, task_status: TaskStatus[None]) -> None:
        """The archiver (`[retention]`): old segments to the archive once every reader and snapshot is past them."""
        self._archiver = Archiver(
            self.config.retention,
            ArchiveFolder(self.config.retention.folder(self.data_dir)),
            log=lambda: self.wal,
            readers=self._log_readers,
            snapshot_lsns=self._snapshot_lsns,
            snapshot_many=self._snapshot_many,
            keep_snapshot=self._keep_snapshot,
            pace=self.parts.pacer.pace,
        )
        await self._archiver.run(task_status=task_status)

    def _log_readers(self) -> dict[str, int]:
        """Each part that reads the log by position, and the lowest LSN it may still read."""
        readers = self._routes.needs_from()
        if self._projections is not None:
            readers["the read side"] = self._projections.needs_from()
        if self._search is not None:
            readers["the search index"] = self._search.indexed_to  # it reads its last record again, to check it
        return readers

    def _snapshot_lsns(self, patients: list[str]) -> dict[str, int]:
        records = self._records
        return records.snapshot_lsns(patients) if records is not None else {}  # restarting: none yet

    def _snapshot_many(self, patients: list[str]) -> dict[str, int]:
        records = self._records
        return records.snapshot_many(patients) if records is not None else {}

    async def _keep_snapshot(self, patient: str) -> int:
        actors = self._fanout.actors
        if actors is None:
            raise LookupError("the patient actors are restarting")
        return await actors.keep_snapshot(patient)

    async def _run_admin(self, *, task_status: TaskStatus[None]) -> None:
        """The admin socket (and its TLS listener, with `[admin] listen`) and the sessions' persistence."""
        assert self._auth is not None
        admin = AdminServer(self.data_dir, self._handlers)
        async with anyio.create_task_group() as tg:
            await tg.start(admin.serve)
            if self.config.admin.listen:
                listener = await self._admin_listener()
                await tg.start(admin.serve_network, listener, self.config.admin.connections_max)
            tg.start_soon(self._auth.persist_sessions)
            task_status.started()

    async def _run_mllp(self, server: MLLPServer, address: tuple[str, int], *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            port = await tg.start(server.serve, address[0], address[1])
            self._mllp_port = port
            tls = " (TLS)" if server.tls else ""
            self._mllp_state = f"listening on port {port}{tls}"
            task_status.started()
        self._mllp_state = "off"

    async def _run_http(self, *, task_status: TaskStatus[None]) -> None:
        """The HTTP face (`engine.web`): FHIR reads, HL7 v2 and FHIR in, probes and metrics."""
        # Loaded here, by a node that serves HTTP: the web stack (Starlette, uvicorn, hypercorn, the
        # Prometheus client) is 70 ms of every other node's start, `vigil run --stdin` included.
        from engine.node.web_face import http_server  # noqa: PLC0415 -- lazy on purpose (above)

        assert self._requests is not None
        assert self._auth is not None
        server = http_server(
            self.config,
            self._config_dir,
            auth=self._auth,
            requests=self._requests,
            answers=self._answers,
            ingest=self._ingest_one,
            ready=self._not_ready,
            report=self._metrics_report,
            handle=self.handle,
        )
        async with anyio.create_task_group() as tg:
            self.http_port = await tg.start(server.serve)
            task_status.started()

    async def _run_drop_folder(self, folder: Path, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await DropFolder(folder, self.config.ingest, self.parts.intake.ingest_stream).watch()

    async def _run_nats(self, *, task_status: TaskStatus[None]) -> None:
        security = nats_security(self.config.nats, self._config_dir)
        source = NatsSource(
            self.config.nats, self.parts.intake.ingest_messages, name=self.config.node.id, security=security
        )
        self._nats = source
        task_status.started()
        try:
            await source.run()
        finally:
            self._nats = None

    async def _run_alerts(self, *, task_status: TaskStatus[None]) -> None:
        """The alert rules (`[alerts]`), judged on what the parts report."""
        config = self.config.alerts
        webhook = None
        if config.webhook_url:
            token_file = str(self._config_dir / config.webhook_token_file) if config.webhook_token_file else ""
            webhook = await anyio.to_thread.run_sync(
                Webhook.from_files, config.webhook_url, token_file, config.webhook_timeout_s
            )
        observations = AlertObservations(
            self.data_dir,
            self._fanout.senders,
            self._refusals,
            self._routes,
            search=lambda: self._search,
            projections=lambda: self._projections,
            clients=self._api_clients,
        )
        self._alerts = AlertWatch(config, self.config.node.id, observations.observe, webhook)
        await self._alerts.run(task_status=task_status)

    def _api_clients(self) -> list[ApiClient]:
        return self._auth.clients.listed() if self._auth is not None else []

    async def _summaries(self, *, task_status: TaskStatus[None]) -> None:
        await summarise(self.config.node.summary_interval_s, self.lane_statistics, task_status=task_status)

    # -- stopping -----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask a serving node to stop (as SIGTERM does)."""
        self._stop_requested.set()

    async def _stop(self, supervisor: Supervisor) -> None:
        """Sources first; then in-flight messages finish (within the deadline) and the patients are snapshot."""
        for name in reversed(_SOURCES):
            if any(child.name == name for child in supervisor.children):
                await supervisor.stop_child(name)
        with anyio.move_on_after(self.config.node.stop_deadline_s) as deadline:
            await self.parts.intake.idle()
            if self._cluster is not None:
                await self._cluster.drain()  # what the stream has not yet got, before the leases go
            if self._fanout.actors is not None:
                await self._fanout.actors.passivate_all()
        if deadline.cancelled_caught:
            _log.warning("node.stop_deadline_passed", in_flight=self.parts.intake.in_flight)
        await supervisor.stop()
        _log.info("node.stopped")

    # -- what the parts are handed ------------------------------------------------------

    async def _record_audit(self, envelopes: Sequence[Envelope]) -> None:
        """Audit events into the log (the hash chain makes them tamper-evident), then to the read side.

        Not to the patient actors: an access is not a fact of the record.
        """
        await self._fanout.apply(envelopes, await self.wal.append(envelopes), to_actors=False)

    async def _answer_forwarded(self, raw: bytes, source: str) -> bytes:
        """A message another node forwarded here (this node owns its partition): ingested, answered in JSON."""
        return msgspec.json.encode(await self.parts.intake.ingest_stream(raw, source))

    async def _answer_record_read(self, request: bytes) -> bytes:
        """Another node's read of a record this node serves (a FHIR read that came to it)."""
        assert self._requests is not None, "the cluster starts after the log's requests"
        return await self._requests.answer_record_read(request)

    async def _adopt_partition(
        self, partition: int, batches: Sequence[ReplicaBatch], settled: Mapping[str, frozenset[str]]
    ) -> None:
        """A partition taken over: its earlier owners' records into the local log (duplicates skipped), applied.

        Each route is told first which of them it had settled on the earlier
        owner (`settled`), so it does not deliver them again.
        """
        self._routes.settled_elsewhere(settled)
        for batch in batches:
            envelopes = [r.envelope for r in batch.records]
            positions = await self.wal.append(envelopes, partition=partition, epoch=batch.epoch)
            # A record this log had already is not read as new: the routes stop looking for it.
            self._routes.not_coming({e.message_id for e, at in zip(envelopes, positions, strict=True) if at.duplicate})
            await self._fanout.apply(envelopes, positions)

    async def _report(self) -> dict[str, object]:
        """The node's account of its parts, for `status` and `health`."""
        actors = self._fanout.actors
        waiting = await self._refusals.open_by_age()
        return {
            "uptime_s": round(anyio.current_time() - self._started, 1),
            "lanes": msgspec.to_builtins(self.parts.scheduler.statistics()),
            "pacing": msgspec.to_builtins(self.parts.pacer.statistics()),
            "actors": msgspec.to_builtins(actors.statistics()) if actors is not None else "restarting",
            "quarantine_open": sum(waiting.values()),
            "quarantine_open_by_age": waiting,
            "projections": msgspec.to_builtins(self._projections.status()) if self._projections else "off",
            "search": {"indexed_to": self._search.indexed_to} if self._search is not None else "off",
            "cluster": msgspec.to_builtins(self._cluster.statistics()) if self._cluster else "off",
            "retention": msgspec.to_builtins(self._archiver.status()) if self._archiver is not None else "off",
            "routes": msgspec.to_builtins(self._routes.statistics()),
            "alerts": msgspec.to_builtins(self._alerts.statistics()) if self._alerts is not None else "starting",
            "in_flight": self.parts.intake.in_flight,
            "invalid_text_messages": self.parts.worker.invalid_text,
            "audit": {"keyed": self._audit_keyed, "key_env": self.config.audit.key_env},
            "sources": {"mllp": self._mllp_state, "nats": self._nats.state if self._nats is not None else "off"},
            "supervision": msgspec.to_builtins(self.supervision()),
        }

    # -- made from the configuration ----------------------------------------------------

    async def _ingest_one(self, raw: bytes, source: str, kind: Kind) -> tuple[IngestResult, MessageError | None]:
        """Intake's, looked up per message: the MLLP server is made before the log (and intake) exist."""
        return await self.parts.intake.ingest_one(raw, source, kind)

    async def _admin_listener(self) -> anyio.abc.Listener[ByteStream]:
        listener, self.admin_port = await admin_listener(self.config, self._config_dir)
        return listener

    # -- reading a running node ---------------------------------------------------------

    @property
    def parts(self) -> Parts:
        assert self._parts is not None, "the node is not running"
        return self._parts

    @property
    def wal(self) -> WriteAheadLog:
        """The node's log (while running)."""
        return self.parts.wal

    def supervision(self) -> list[ChildStatus]:
        """The supervision tree's children in start order: state, restarts, last error (`vigil status`)."""
        return self._supervisor.status() if self._supervisor is not None else []

    def lane_statistics(self) -> list[LaneStatistics]:
        """Each lane's depth, counters and latencies."""
        return self.parts.scheduler.statistics()

    @property
    def auth(self) -> AuthEndpoint:
        """The node's authentication endpoint (while running)."""
        assert self._auth is not None, "the node is not running"
        return self._auth

    async def patient(self, key: str, *, known_at: str | None = None, as_of: str | None = None) -> RecordView:
        """A patient's record from its actor (now, as known at, as of)."""
        assert self._requests is not None, "the node is not running"
        return await self._requests.patient(key, known_at=known_at, as_of=as_of)

    async def handle(self, operation: str, request: dict[str, object]) -> object:
        """Answer an admin request in-process, exactly as the admin socket would (embedding, benchmarks)."""
        handler = self._handlers.get(operation)
        if handler is None:
            raise AdminError(f"unknown request {operation!r}")
        return await handler(request)

    def _not_ready(self) -> str | None:
        """Why the node should not be sent traffic now (`/readyz`), or None when every part runs."""
        if self._stop_requested.is_set():
            return "stopping"
        if self._parts is None:
            return "the log is not open"
        waiting = [f"{c.name} is {c.state}" for c in self.supervision() if c.state != "running"]
        return ", ".join(waiting) or None

    async def _metrics_report(self) -> dict[str, object]:
        """The report `/metrics` reads: `vigil status`'s, with the log's counters, senders and connections."""
        indexed = await self._search.senders() if self._search is not None else []
        # The index's counts, its times brought up to date with what this node heard since (the index lags floods).
        last = self._fanout.senders.merged(indexed)
        senders = [(sender, last[sender], count) for sender, _last, count in indexed]
        return {
            **await self._report(),
            "wal": msgspec.to_builtins(self.wal.statistics()),
            "senders": senders,
            "mllp_connections": self._mllp_server.connections if self._mllp_server is not None else None,
        }

    def _busy(self) -> bool:
        """Messages in flight: the read side yields to them."""
        return self._parts is not None and self._parts.intake.in_flight > 0

    def _read_side_lag(self) -> tuple[int, float] | None:
        return self._projections.lag() if self._projections is not None else None

    def _route_lanes(self) -> list[RouteLane]:
        return [
            (route.name, lane.lane, lane.backlog, lane.oldest_age_s, lane.delivered)
            for route in self._routes.statistics()
            for lane in route.lanes
        ]

    def _lane_depths(self) -> list[tuple[str, int]]:
        if self._parts is None:
            return []
        return [(s.lane, s.depth) for s in self._parts.scheduler.statistics()]
