"""The node: sources in, ACKs out. The one place that wires every part together.

A message's way: a source reads it (MLLP connection, stdin), the classifier
picks its lane from the raw bytes, the lane scheduler admits it (waiting
while the lane is full, so a full lane stops the reading: backpressure), a
lane worker parses and maps it and appends it to the write-ahead log, and
only then is the source answered (invariant 1): `AA`/`CA` once durable, a
duplicate too (same LSN, no second append); `AR`/`CR` with an ERR segment
for a message that can never be accepted (it goes to quarantine with its
bytes, invariant 2); `AE`/`CE` for a temporary failure (disk full, the log
stopped, an ACK that waited too long) so the sender retries. After the ACK
the record goes to its patient's actor.

Stopping (SIGTERM/SIGINT, or the end of stdin): stop accepting, let in-flight
messages finish within `node.stop_deadline_s`, passivate the patient actors
(snapshots), close the log (checkpoint, saved indexes).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import final

import anyio
import msgspec
import structlog
from anyio.abc import ByteStream, TaskGroup, TaskStatus
from anyio.streams.tls import TLSListener
from opentelemetry.trace import Span

from actors import Applied, PatientActors, RecordView, parse_moment
from engine.auth import AuthService, AuthStore, Permission
from engine.auth.endpoint import AuthEndpoint
from engine.cluster import Cluster, FencedError, ReplicaBatch, partition_of
from engine.core.decode import Decoder
from engine.core.errors import CharsetError, ConfigError, InputError
from engine.core.model import Envelope, InvalidText, Kind, Lane
from engine.core.outcome import IngestResult, Outcome, worst
from engine.core.split import Piece, split_input
from engine.core.windows import patient_hint, windows
from engine.infra.admin_socket import AdminError, AdminServer, Handler
from engine.infra.config import Config, split_address
from engine.infra.memory import release_free_memory
from engine.infra.telemetry import Telemetry
from engine.infra.tls import nats_security, server_context
from engine.ingress.drop_folder import DropFolder
from engine.ingress.mllp_answers import MLLPAnswers
from engine.ingress.mllp_listener import MLLPServer
from engine.ingress.nats_source import NatsSource
from engine.ingress.parse_pool import Parsed, ParsePool
from engine.node.acknowledgements import acknowledgement, was_critical
from engine.node.record_source import LogRecordSource, PoisonQuarantine
from engine.node.work import Group, TemporaryError, Work, timed_out
from engine.projections import ProjectionRunner, Record, dsn_of
from engine.wal import DiskFullError, Position, WALFailedError, WriteAheadLog, open_wal
from engine.wal.audit import audit_key_from_env
from engine.wal.files import OSFiles
from engine.wal.log import utc_now
from engine.wal.quarantine import Quarantine
from engine.wal.scan import Progress
from engine.wal.snapshots import SnapshotStore
from lanes import Classifier, LaneScheduler, LaneStatistics
from lanes.classify import Classification

__all__ = ["IngestResult", "Node"]

_log = structlog.get_logger("vigil.node")


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
        self._config_dir = config_dir or Path()
        self._recovery_progress = recovery_progress
        self.data_dir = data_dir
        self._clock = clock or (lambda: datetime.now(UTC))
        self._decoder = Decoder(Classifier(config.lanes.rules), config.ingest.charsets())
        self._classifier = self._decoder.classifier
        self._parse_pool = ParsePool(config.lanes.rules, config.ingest.parse_workers, self._decoder.charsets)
        # anyio.Event() looks the backend up each time; a message makes one or two: resolved once, in `run`.
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        # The per-message debug line through a logger bound once: the module's lazy proxy binds on every call.
        self._message_log = _log
        self._in_flight = 0
        self._invalid_text = 0  # messages whose invalid bytes were replaced (`engine.core.hl7.parse`)
        self._audit_keyed = False
        self._idle = anyio.Event()
        self._idle.set()
        self._wal: WriteAheadLog | None = None
        self._actors: PatientActors | None = None
        self._scheduler: LaneScheduler[Group] | None = None
        self._quarantine = Quarantine(data_dir / "quarantine", OSFiles())
        self._stop_requested = anyio.Event()
        self._telemetry = Telemetry(self._lane_depths, self._read_side_lag)
        self._started = 0.0
        self._mllp_port: int | None = None
        self._nats: NatsSource | None = None
        self._mllp_tls = False
        self._projections: ProjectionRunner | None = None
        self._auth: AuthEndpoint | None = None
        self._cluster: Cluster | None = None
        self._requests: dict[str, Handler] = {}
        self.admin_port: int | None = None  # the admin endpoint's TCP port, when `[admin] listen` is set

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
        """
        # Its processes import while the log is recovered. Not for a small stdin input: a worker
        # still importing holds the process's exit back by most of a second.
        large_stdin = stdin is not None and stdin.count(b"MSH") >= self.config.ingest.parse_pool_messages_min
        serving = mllp is not None or watch is not None or (self.config.nats.servers and self.config.nats.subjects)
        if large_stdin or serving:  # a served source may send a large message: workers parse it
            self._parse_pool.start()
        try:
            return await self._run(mllp=mllp, stdin=stdin, watch=watch, mllp_tls=mllp_tls, task_status=task_status)
        finally:
            self._parse_pool.close()

    async def _run(
        self,
        *,
        mllp: tuple[str, int] | None,
        stdin: bytes | None,
        watch: Path | None,
        mllp_tls: ssl.SSLContext | None,
        task_status: TaskStatus[int | None],
    ) -> list[IngestResult]:
        key = audit_key_from_env(self.config.audit.key_env)
        self._audit_keyed = key is not None
        if key is None:
            _log.warning(
                "node.audit_unkeyed",
                variable=self.config.audit.key_env,
                consequence="no keyed checkpoints: whoever can rewrite the whole log can rebuild its hash chain "
                "unseen, and `vigil audit verify` has no key to check it against",
                fix=f"set {self.config.audit.key_env} to a secret of at least 16 bytes before starting the node",
            )
        self._new_event = type(anyio.Event())
        self._message_log = _log.bind()
        results: list[IngestResult] = []
        async with (
            open_wal(self.data_dir / "wal", self.config.wal, audit_key=key, progress=self._recovery_progress) as wal,
            anyio.create_task_group() as tg,
        ):
            self._wal = wal
            wal.on_control_id_reused = lambda: self._telemetry.reused_control_ids.add(1)
            snapshots = SnapshotStore(self.data_dir / "snapshots", OSFiles())
            self._actors = PatientActors(
                LogRecordSource(wal, snapshots),
                PoisonQuarantine(wal, self._quarantine),
                idle_timeout_s=self.config.actors.idle_timeout_s,
                active_max=self.config.actors.active_max,
            )
            await tg.start(self._actors.run)
            self._scheduler = LaneScheduler(self.config.lanes.scheduler, self._handle)
            await tg.start(self._scheduler.run)
            self._projections = self._read_side(wal)
            if self._projections is not None:
                await tg.start(self._projections.run)
            if self.config.cluster.enabled:
                self._cluster = self._join_cluster(wal)
                await tg.start(self._cluster.run)
            store = await self._start_admin(tg)
            self._started = anyio.current_time()
            tg.start_soon(self._summarise)
            port = None
            listening = anyio.CancelScope()
            if mllp is not None:
                answers = MLLPAnswers(self._ingest, self.config.node.id, self._clock)
                server = MLLPServer(
                    self.config.mllp,
                    self.config.ingest.message_bytes_max,
                    answers.answer_frame,
                    answers.refuse_framing,
                    tls=mllp_tls,
                )
                port = await tg.start(self._listen, server, mllp, listening)
                self._mllp_port = port
                self._mllp_tls = mllp_tls is not None
            watching = anyio.CancelScope()
            if watch is not None:
                tg.start_soon(self._watch, DropFolder(watch, self.config.ingest, self._ingest_stream), watching)
            if stdin is None and self.config.nats.servers and self.config.nats.subjects:
                security = nats_security(self.config.nats, self._config_dir)
                self._nats = NatsSource(
                    self.config.nats, self._ingest_messages, name=self.config.node.id, security=security
                )
                tg.start_soon(self._consume_nats, self._nats, watching)
            task_status.started(port)
            _log.info("node.ready", mllp_port=port, last_lsn=wal.last_lsn)
            if stdin is not None:
                results = await self._ingest_stream(stdin, "stdin")
            else:
                await self._wait_for_stop()
            listening.cancel()
            watching.cancel()
            await self._stop()
            tg.cancel_scope.cancel()
        # After the task group: the sessions' last activity was flushed as its task ended.
        await anyio.to_thread.run_sync(store.close)
        return results

    async def _start_admin(self, tg: TaskGroup) -> AuthStore:
        """Accounts and sessions, and the admin socket that serves them and every operator request."""
        store = await anyio.to_thread.run_sync(AuthStore.open_private, self.data_dir)
        service = await anyio.to_thread.run_sync(AuthService, store, self.config.auth)  # it reads the live sessions
        self._auth = AuthEndpoint(service, self._record_audit, node=self.config.node.id)
        self._requests = {
            "health": self._health,
            "status": self._status,
            "patient": self._patient_request,
            "acknowledge": self._acknowledge,
            **self._auth.handlers(),
        }
        admin = AdminServer(self.data_dir, self._requests)
        await tg.start(admin.serve)
        if self.config.admin.listen:
            listener = await self._admin_listener()
            await tg.start(admin.serve_network, listener, self.config.admin.connections_max)
        tg.start_soon(self._auth.persist_sessions)
        return store

    async def _admin_listener(self) -> anyio.abc.Listener[ByteStream]:
        """The admin endpoint on the network: TLS only (it carries passwords and PHI)."""
        config = self.config.admin
        context = server_context(config, self._config_dir, where="admin")
        if context is None:
            raise ConfigError("admin.listen needs admin.tls_cert_file and admin.tls_key_file: never plain TCP")
        host, port = split_address(config.listen, "admin.listen")
        tcp = await anyio.create_tcp_listener(local_host=host, local_port=port)
        self.admin_port = tcp.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 -- anyio, not Django
        timeout = self.config.mllp.tls_handshake_timeout_s
        return TLSListener(tcp, context, standard_compatible=False, handshake_timeout=timeout)

    def _join_cluster(self, wal: WriteAheadLog) -> Cluster:
        """This node's part in the cluster (`[cluster]`); its NATS credentials and TLS are `[nats]`'s."""
        servers = self.config.cluster.servers or self.config.nats.servers
        if not servers:
            raise ConfigError("cluster.enabled needs NATS servers: cluster.servers, nats.servers or --nats URL")
        return Cluster(
            self.config.cluster,
            self.config.node.id,
            wal,
            servers=servers,
            security=nats_security(self.config.nats, self._config_dir),
            adopt=self._adopt_partition,
            forwarded=self._answer_forwarded,
        )

    def _read_side(self, wal: WriteAheadLog) -> ProjectionRunner | None:
        """The projection runner when a DSN is configured; without one the node runs without a read side."""
        dsn = dsn_of(self.config.projections)
        if dsn is None:
            return None
        rules = self.config.lanes.rules
        flags = (*rules.critical_abnormal_flags, *rules.local_critical_flags)
        return ProjectionRunner(
            wal,
            self.config.projections,
            dsn,
            base=self._config_dir,
            critical_flags=flags,
            busy=lambda: self._in_flight > 0,
        )

    def _read_side_lag(self) -> tuple[int, float] | None:
        return self._projections.lag() if self._projections is not None else None

    def _lane_depths(self) -> list[tuple[str, int]]:
        if self._scheduler is None:
            return []
        return [(s.lane, s.depth) for s in self._scheduler.statistics()]

    async def _summarise(self) -> None:
        """Per-lane summaries at info, every `node.summary_interval_s`; then free memory back to the system.

        Passivated records and finished bursts leave pages the allocator keeps
        for later (`engine.infra.memory`): a trim once an interval returns them.
        """
        while True:
            await anyio.sleep(self.config.node.summary_interval_s)
            await anyio.to_thread.run_sync(release_free_memory)
            if self._scheduler is not None:
                for lane in self._scheduler.statistics():
                    _log.info(
                        "lane.summary",
                        lane=lane.lane,
                        depth=lane.depth,
                        done=lane.done,
                        failed=lane.failed,
                        p50_ms=lane.total_p50_us / 1000,
                        p99_ms=lane.total_p99_us / 1000,
                    )

    def stop(self) -> None:
        """Ask a serving node to stop (as SIGTERM does)."""
        self._stop_requested.set()

    async def patient(self, key: str, *, known_at: str | None = None, as_of: str | None = None) -> RecordView:
        """A patient's record from its actor (now, as known at, as of)."""
        assert self._actors is not None, "the node is not running"
        return await self._actors.query(key, known_at=known_at, as_of=as_of)

    @property
    def wal(self) -> WriteAheadLog:
        """The node's log (while running)."""
        assert self._wal is not None, "the node is not running"
        return self._wal

    def lane_statistics(self) -> list[LaneStatistics]:
        """Each lane's depth, counters and latencies."""
        assert self._scheduler is not None, "the node is not running"
        return self._scheduler.statistics()

    @property
    def auth(self) -> AuthEndpoint:
        """The node's authentication endpoint (while running)."""
        assert self._auth is not None, "the node is not running"
        return self._auth

    async def handle(self, operation: str, request: dict[str, object]) -> object:
        """Answer an admin request in-process, exactly as the admin socket would (embedding, benchmarks)."""
        handler = self._requests.get(operation)
        if handler is None:
            raise AdminError(f"unknown request {operation!r}")
        return await handler(request)

    async def _record_audit(self, envelopes: Sequence[Envelope]) -> None:
        """Audit events into the log (the hash chain makes them tamper-evident), then to the read side.

        Not to the patient actors: an access is not a fact of the record.
        """
        await self._apply(envelopes, await self.wal.append(envelopes), to_actors=False)

    async def _health(self, _request: dict[str, object]) -> dict[str, object]:
        """No session needed: no PHI, only whether the node runs, its LSN and its read side (scripts, `vigil db`)."""
        return {
            "node": self.config.node.id,
            "wal": {"last_lsn": self.wal.last_lsn},
            "sources": self._sources(),
            "projections": msgspec.to_builtins(self._projections.status()) if self._projections else "off",
            "cluster": msgspec.to_builtins(self._cluster.statistics()) if self._cluster else "off",
        }

    async def _status(self, request: dict[str, object]) -> dict[str, object]:
        """What `vigil status` shows."""
        await self.auth.authorize(request, Permission.STATUS_READ)
        assert self._actors is not None
        assert self._scheduler is not None
        open_items = await anyio.to_thread.run_sync(lambda: sum(1 for q in self._quarantine.items() if q.open))
        auth = await anyio.to_thread.run_sync(self.auth.service.statistics)
        return {
            "node": self.config.node.id,
            "uptime_s": round(anyio.current_time() - self._started, 1),
            "wal": msgspec.to_builtins(self.wal.statistics()),
            "first_lsn": self.wal.first_lsn,
            "lanes": msgspec.to_builtins(self._scheduler.statistics()),
            "actors": msgspec.to_builtins(self._actors.statistics()),
            "quarantine_open": open_items,
            "projections": msgspec.to_builtins(self._projections.status()) if self._projections else "off",
            "cluster": msgspec.to_builtins(self._cluster.statistics()) if self._cluster else "off",
            "in_flight": self._in_flight,
            "invalid_text_messages": self._invalid_text,
            "audit": {"keyed": self._audit_keyed, "key_env": self.config.audit.key_env},
            "sources": self._sources(),
            "auth": auth,
        }

    def _sources(self) -> dict[str, str]:
        mllp = f"listening on port {self._mllp_port}{' (TLS)' if self._mllp_tls else ''}" if self._mllp_port else "off"
        return {"mllp": mllp, "nats": self._nats.state if self._nats is not None else "off"}

    async def _patient_request(self, request: dict[str, object]) -> object:
        key = request.get("key")
        if not isinstance(key, str) or not key:
            raise AdminError("a patient key (authority|identifier) is needed")
        await self.auth.authorize(request, Permission.RECORD_READ, patient=key, action="record")
        self._check_served(key)
        known_at, as_of = _moment(request, "known_at"), _moment(request, "as_of")
        return msgspec.to_builtins(await self.patient(key, known_at=known_at, as_of=as_of))

    async def _append_command(self, env: Envelope) -> list[Position]:
        """A command about a patient into the log; in a cluster, in its partition's epoch and into the stream first."""
        cluster = self._cluster
        try:
            if cluster is None:
                return await self.wal.append([env])
            partition = cluster.partition_of(env)
            epoch = cluster.enter(partition)
            if epoch is None:
                raise AdminError(f"this patient's partition ({partition}) is not served here now: retry")
            try:
                positions = await self.wal.append([env], partition=partition, epoch=epoch)
                with anyio.fail_after(self.config.mllp.ack_timeout_s):
                    await cluster.wait_replicated(partition, epoch, positions[0].lsn)
            finally:
                cluster.leave(partition)
        except (DiskFullError, WALFailedError, FencedError, TimeoutError) as exc:
            raise AdminError(f"not recorded, retry: {exc or 'the stream did not acknowledge in time'}") from None
        return positions

    def _check_served(self, patient: str) -> None:
        """In a cluster, a record is answered by its partition's owner only: another node's copy may be behind."""
        cluster = self._cluster
        if cluster is None:
            return
        partition = partition_of(patient, self.config.cluster.partitions)
        if not cluster.serves(partition):
            owner = cluster.owner(partition)
            where = f"node {owner}" if owner else "no node at this moment (a takeover is in progress)"
            raise AdminError(f"this patient's partition ({partition}) is served by {where}: ask there")

    async def _acknowledge(self, request: dict[str, object]) -> object:
        """A clinician acknowledges a critical result: recorded in the log, then applied."""
        fields = {k: request.get(k) for k in ("patient", "result_key", "request_id")}
        missing = [k for k, v in fields.items() if not isinstance(v, str) or not v]
        if missing:
            raise AdminError(f"an acknowledgement needs {', '.join(missing)}")
        patient, result_key, request_id = (str(fields[k]) for k in ("patient", "result_key", "request_id"))
        # Who acknowledges is the session's user, never a name the client types.
        access = await self.auth.authorize(
            request, Permission.RESULT_ACKNOWLEDGE, patient=patient, action="acknowledge"
        )
        self._check_served(patient)
        by = access.user.id
        note = request.get("note")
        view = await self.patient(patient)
        result = next((r for r in view.results if r.result_key == result_key), None)
        rules = self.config.lanes.rules
        if result is None or not was_critical(result, (*rules.critical_abnormal_flags, *rules.local_critical_flags)):
            raise AdminError("that patient has no critical result with that key")
        now = utc_now()
        note_text = note if isinstance(note, str) else ""
        env = acknowledgement(patient, result_key, by, note_text, request_id=request_id, now=now)
        positions = await self._append_command(env)
        await self._apply([env], positions)
        return {"lsn": positions[0].lsn, "duplicate": positions[0].duplicate, "acknowledged_at": now}

    async def _wait_for_stop(self) -> None:
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                await _until_signalled()
                tg.cancel_scope.cancel()

            async def on_request() -> None:
                await self._stop_requested.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_signal)
            tg.start_soon(on_request)

    async def _watch(self, folder: DropFolder, scope: anyio.CancelScope) -> None:
        with scope:
            await folder.watch()

    async def _consume_nats(self, source: NatsSource, scope: anyio.CancelScope) -> None:
        with scope:
            await source.run()

    async def _listen(
        self,
        server: MLLPServer,
        address: tuple[str, int],
        scope: anyio.CancelScope,
        *,
        task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        with scope:
            await server.serve(address[0], address[1], task_status=task_status)

    async def _stop(self) -> None:
        """Finish in-flight messages (within the deadline), then snapshot the patients."""
        with anyio.move_on_after(self.config.node.stop_deadline_s) as deadline:
            await self._idle.wait()
            if self._cluster is not None:
                await self._cluster.drain()  # what the stream has not yet got, before the leases go
            if self._actors is not None:
                await self._actors.passivate_all()
        if deadline.cancelled_caught:
            _log.warning("node.stop_deadline_passed", in_flight=self._in_flight)
        _log.info("node.stopped")

    # -- sources --------------------------------------------------------------------

    async def _ingest_stream(self, raw: bytes, source: str) -> list[IngestResult]:
        """Every message of one input (stdin, a file), answered in input order."""
        return await self._ingest_pieces(split_input(raw, self.config.ingest.message_bytes_max), source)

    async def _ingest_messages(self, payloads: Sequence[bytes], source: str) -> list[tuple[Outcome, bytes]]:
        """Several source messages at once (a NATS batch): a verdict and a JSON reply for each.

        A message may hold several (an NDJSON line set, a batch file): its verdict
        is the worst of theirs, retry before rejected, so a sender retries rather
        than gives up when part of it met a temporary failure.
        """
        limit = self.config.ingest.message_bytes_max
        split = [split_input(payload, limit) for payload in payloads]
        results = await self._ingest_pieces([piece for pieces in split for piece in pieces], source)
        answers: list[tuple[Outcome, bytes]] = []
        start = 0
        for pieces in split:
            mine = results[start : start + len(pieces)]
            start += len(pieces)
            answers.append((worst(r.outcome for r in mine), msgspec.json.encode(mine)))
        return answers

    async def _ingest_pieces(self, pieces: list[Piece], source: str) -> list[IngestResult]:
        """The messages of one input, answered in input order, in windows of lane groups (`engine.core.windows`).

        A large input is parsed in worker processes (`engine.ingress.parse_pool`), in
        chunks, while the windows of the chunks already parsed are appended;
        a small one (or one the workers cannot take) is parsed in the loop.
        """
        results: list[IngestResult] = [IngestResult(Outcome.RETRY)] * len(pieces)
        if len(pieces) < self.config.ingest.parse_pool_messages_min:
            everything = range(len(pieces))
            await self._ingest_chunk(pieces, everything, self._parse_here(pieces, everything), source, results)
            return results
        received = self._clock().isoformat(timespec="milliseconds")
        spans = [
            range(start, min(len(pieces), start + _PARSE_CHUNK_MESSAGES))
            for start in range(0, len(pieces), _PARSE_CHUNK_MESSAGES)
        ]
        ahead: deque[asyncio.Future[tuple[bytes, dict[int, InputError]]] | None] = deque()
        for k, span in enumerate(spans):
            # A few chunks ahead, no more: parsed envelopes weigh several times their bytes.
            for later in spans[k + len(ahead) : k + _PARSE_CHUNKS_AHEAD]:
                messages = [(pieces[i].data, pieces[i].in_batch) for i in later if _groupable(pieces[i])]
                ahead.append(self._parse_pool.submit(messages, received, source))
            future = ahead.popleft()  # this span's
            answer = await self._parse_pool.result(future) if future is not None else None
            parsed = self._parse_here(pieces, span) if answer is None else _unpack(pieces, span, answer)
            await self._ingest_chunk(pieces, span, parsed, source, results)
        return results

    def _parse_here(self, pieces: list[Piece], span: range) -> _Parsed:
        """Lanes and patient hints of the pieces of `span`, classified in the loop (parsed later, in the lane)."""
        classified: list[Classification | None] = []
        hints: list[bytes | None] = []
        for piece in (pieces[i] for i in span):
            lane = hint = None
            if _groupable(piece):
                hint = patient_hint(piece.data)
                # A refusal is made and explained one by one, in the window that holds it.
                with contextlib.suppress(InputError):
                    lane = self._classifier.classify_hl7(piece.data, in_batch=piece.in_batch)
            classified.append(lane)
            hints.append(hint)
        return classified, hints, [None] * len(span)

    async def _ingest_chunk(
        self, pieces: list[Piece], span: range, parsed: _Parsed, source: str, results: list[IngestResult]
    ) -> None:
        """The pieces of `span`, window by window: each window's lane groups side by side."""
        classified, hints, envelopes = parsed
        lanes = [c.lane if c is not None else None for c in classified]
        for window in windows(lanes, hints, _GROUP_MESSAGES_MAX):
            if window.one_by_one:
                alone = [pieces[span.start + i] for i in window.one_by_one]
                answered = await self._ingest_one_by_one(alone, source)
                for i, result in zip(window.one_by_one, answered, strict=True):
                    results[span.start + i] = result
                continue
            async with anyio.create_task_group() as tg:
                for lane, indexes in window.groups:
                    works = [
                        Work(
                            pieces[span.start + i].data,
                            source,
                            Kind.HL7V2,
                            in_batch=pieces[span.start + i].in_batch,
                            classified=classified[i],
                            parsed=envelopes[i],
                        )
                        for i in indexes
                    ]
                    tg.start_soon(self._ingest_group, lane, works, [span.start + i for i in indexes], results)

    async def _ingest_one_by_one(self, pieces: list[Piece], source: str) -> list[IngestResult]:
        """Messages answered in order; up to `_STREAM_WINDOW` in flight at once, so the log can group-commit.

        A message waits for the previous one *of the same patient* to be
        durable first, so no patient's history is reordered.
        """
        results: list[IngestResult | None] = [None] * len(pieces)
        window = anyio.Semaphore(_STREAM_WINDOW)
        last: dict[bytes, anyio.Event] = {}

        async def one(index: int, before: anyio.Event | None, mine: anyio.Event) -> None:
            piece = pieces[index]
            try:
                if before is not None:
                    await before.wait()
                if piece.error is not None:
                    results[index] = await self._reject(piece.data or b"", source, piece.error)
                else:
                    outcome = await self._ingest(piece.data, source, piece.kind, in_batch=piece.in_batch)
                    results[index] = outcome[0]
            finally:
                mine.set()
                window.release()

        async with anyio.create_task_group() as tg:
            for index, piece in enumerate(pieces):
                await window.acquire()
                mine = anyio.Event()
                key = patient_hint(piece.data) if piece.kind is Kind.HL7V2 and piece.error is None else None
                before = last.get(key) if key else None
                if key:
                    last[key] = mine
                tg.start_soon(one, index, before, mine)
        return [r if r is not None else IngestResult(Outcome.RETRY) for r in results]

    # -- the path of one message -------------------------------------------------------

    async def _ingest(
        self, raw: bytes, source: str, kind: Kind, *, in_batch: bool = False
    ) -> tuple[IngestResult, InputError | None]:
        large = kind is Kind.HL7V2 and len(raw) >= self.config.ingest.large_message_bytes
        try:
            return await self._ingest_one(raw, source, kind, in_batch=in_batch, large=large)
        finally:
            if large:  # what it took (parse, envelope, frame) goes back to the system
                await anyio.to_thread.run_sync(release_free_memory)

    async def _ingest_one(
        self, raw: bytes, source: str, kind: Kind, *, in_batch: bool, large: bool
    ) -> tuple[IngestResult, InputError | None]:
        made = None
        if large:  # classified and parsed in a worker, away from the loop that answers critical traffic
            received = self._clock().isoformat(timespec="milliseconds")
            made = await self._parse_pool.parse_one(raw, in_batch=in_batch, received_at=received, source=source)
        if made is not None and made[0] is not None:
            classified, parsed = made
        else:
            parsed = None
            try:
                classified = self._classifier.classify_hl7(raw, in_batch=in_batch) if kind is Kind.HL7V2 else None
            except InputError as exc:
                return await self._reject(raw, source, exc), exc
        lane = classified.lane if classified is not None else Lane.STANDARD
        work = Work(raw, source, kind, in_batch=in_batch, classified=classified, parsed=parsed)
        started = time.perf_counter()
        attributes = {"vigil.lane": lane.value, "vigil.kind": kind.value}
        span_scope: contextlib.AbstractContextManager[Span | None] = (
            self._telemetry.tracer.start_as_current_span("vigil.message", attributes=attributes)
            if self._telemetry.tracing
            else contextlib.nullcontext()
        )
        with span_scope as span:
            late = await self._through_lane(lane, Group([work], self._new_event()))
            result, reason = timed_out() if late else (work.result, work.reason)
            self._answered(span, lane, work, result, (time.perf_counter() - started) * 1000)
        return result, reason

    async def _through_lane(self, lane: Lane, group: Group) -> bool:
        """A group admitted to its lane and waited for; True if `ack_timeout_s` passed first."""
        assert self._scheduler is not None
        with self._counted_in_flight(len(group.works)), anyio.move_on_after(self.config.mllp.ack_timeout_s) as waited:
            await self._scheduler.admit(lane, group)
            await group.done.wait()
        return waited.cancelled_caught

    async def _ingest_group(
        self, lane: Lane, works: list[Work], indexes: Sequence[int], results: list[IngestResult]
    ) -> None:
        """Messages of one lane from one input: one scheduler turn, one append; each answered on its own."""
        group = Group(works, self._new_event())
        started = time.perf_counter()
        # One span per message, as on the one-by-one path: receive to durable.
        attributes = {"vigil.lane": lane.value, "vigil.kind": Kind.HL7V2.value}
        tracer = self._telemetry.tracer if self._telemetry.tracing else None
        spans = [tracer.start_span("vigil.message", attributes=attributes) if tracer else None for _ in works]
        await self._through_lane(lane, group)
        elapsed_ms = (time.perf_counter() - started) * 1000
        for index, work, span in zip(indexes, group.works, spans, strict=True):
            results[index] = work.result if work.answered else timed_out()[0]
            self._answered(span, lane, work, results[index], elapsed_ms)
            if span is not None:
                span.end()

    @contextlib.contextmanager
    def _counted_in_flight(self, count: int) -> Iterator[None]:
        """Messages in flight, so a stop waits for them (`_idle`)."""
        if self._in_flight == 0:
            self._idle = anyio.Event()
        self._in_flight += count
        try:
            yield
        finally:
            self._in_flight -= count
            if self._in_flight == 0:
                self._idle.set()

    def _answered(self, span: Span | None, lane: Lane, work: Work, result: IngestResult, elapsed_ms: float) -> None:
        """A message's span attributes, metrics and canonical log line (at debug; nothing identifies a patient)."""
        if span is not None:
            span.set_attribute("vigil.outcome", result.outcome)
            span.set_attribute("vigil.message_type", work.message_type)
            if result.lsns:
                span.set_attribute("vigil.lsn", result.lsns[0])
                span.add_event("durable")
        self._telemetry.messages.add(1, {"vigil.lane": lane.value, "vigil.outcome": result.outcome})
        self._telemetry.ack_latency.record(elapsed_ms, {"vigil.lane": lane.value})
        lsn = result.lsns[0] if result.lsns else None
        self._message_log.debug(
            "message", lane=lane.value, type=work.message_type, outcome=result.outcome, lsn=lsn, ms=round(elapsed_ms, 3)
        )

    async def _handle(self, _lane: Lane, group: Group) -> None:
        """A lane worker: parse and map, append durably (a group in one append), answer, hand to the actors.

        A refusal is its own message's alone: the others of the group go on.
        """
        assert self._wal is not None
        if self._cluster is not None:
            await self._handle_clustered(group, self._cluster)
            return
        envelopes: list[Envelope] = []
        positions: list[Position] = []
        try:
            owned = await self._decode_group(group)
            envelopes = [env for _work, made in owned for env in made]
            if not owned:
                return
            try:
                positions = await self._wal.append(envelopes)
            except (DiskFullError, WALFailedError) as exc:
                _retry_all([work for work, _made in owned], str(exc))
                return
            _accept(owned, positions)
        finally:
            group.done.set()
        await self._apply(envelopes, positions)

    async def _decode_group(self, group: Group) -> list[tuple[Work, list[Envelope]]]:
        """Each message of a group parsed and mapped; a refused one is answered (and quarantined) here."""
        received = self._clock().isoformat(timespec="milliseconds")
        owned: list[tuple[Work, list[Envelope]]] = []
        for work in group.works:
            try:
                made = self._decode(work, received)
            except InputError as exc:
                work.finish(Outcome.REJECTED, await self._reject(work.raw, work.source, exc), exc)
                continue
            work.message_type = made[0].message_type if made else ""
            for env in made:
                if env.invalid_text is not None:
                    self._note_invalid_text(env)
            owned.append((work, made))
        return owned

    def _note_invalid_text(self, env: Envelope) -> None:
        """Invalid bytes replaced in a message that flows on: said and counted (where, never what)."""
        self._invalid_text += 1
        self._telemetry.invalid_text.add(1)
        invalid = env.invalid_text
        assert invalid is not None
        _log.warning(
            "hl7.invalid_text_replaced",
            message_id=env.message_id,
            charset=invalid.charset,
            replaced=invalid.count,
            segment=invalid.first.segment,
            field=invalid.first.field,
            byte_offset=invalid.first.byte_offset,
            hint="set ingest.hl7_sender_charsets for this sender if it sends another character set",
        )

    async def _handle_clustered(self, group: Group, cluster: Cluster) -> None:
        """The cluster's lane worker: each message to its partition, served here or forwarded to its owner."""
        applied: list[tuple[list[Envelope], list[Position]]] = []
        try:
            by_partition: dict[int, list[tuple[Work, list[Envelope]]]] = {}
            for work, made in await self._decode_group(group):
                if made:
                    by_partition.setdefault(cluster.partition_of(made[0]), []).append((work, made))
                else:
                    work.finish(Outcome.ACCEPTED, IngestResult(Outcome.ACCEPTED))
            async with anyio.create_task_group() as tg:
                for partition, owned in by_partition.items():
                    tg.start_soon(self._append_partition, cluster, partition, owned, applied)
        finally:
            group.done.set()
        for envelopes, positions in applied:
            await self._apply(envelopes, positions)

    async def _append_partition(
        self,
        cluster: Cluster,
        partition: int,
        owned: list[tuple[Work, list[Envelope]]],
        applied: list[tuple[list[Envelope], list[Position]]],
    ) -> None:
        """Messages of one partition: appended with the owner's epoch, answered once durable as each lane's ack asks."""
        epoch = cluster.enter(partition)
        if epoch is None:
            await self._forward(cluster, partition, [work for work, _made in owned])
            return
        try:
            envelopes = [env for _work, made in owned for env in made]
            try:
                with anyio.fail_after(self.config.mllp.ack_timeout_s):
                    await cluster.wait_room(partition, epoch)  # replication far behind: the sources wait
            except (FencedError, TimeoutError) as exc:
                _retry_all([work for work, _made in owned], f"replication is behind: {exc or 'timed out'}; retry")
                return
            try:
                positions = await self.wal.append(envelopes, partition=partition, epoch=epoch)
            except (DiskFullError, WALFailedError) as exc:
                _retry_all([work for work, _made in owned], str(exc))
                return
            applied.append((envelopes, positions))
            acks = self.config.cluster.ack
            if any(getattr(acks, env.lane.value) == "cluster" for env in envelopes):
                try:
                    with anyio.fail_after(self.config.mllp.ack_timeout_s):
                        await cluster.wait_replicated(partition, epoch, max(p.lsn for p in positions))
                except (FencedError, TimeoutError) as exc:
                    # Durable here but not in the stream: the source retries (to the new owner, if it moved).
                    why = str(exc) or "the stream did not acknowledge in time"
                    _retry_all([work for work, _made in owned], f"not replicated: {why}; retry")
                    return
            _accept(owned, positions)
        finally:
            cluster.leave(partition)

    async def _forward(self, cluster: Cluster, partition: int, works: list[Work]) -> None:
        """Messages of a partition this node does not serve: to its owner, whose answer is theirs."""
        owner = cluster.owner(partition)
        if owner is None or owner == cluster.node or any(w.source.startswith("forwarded:") for w in works):
            # No owner now (a takeover in progress, or NATS away), or a forward that came back: retried shortly.
            if cluster.state != "connected":
                why = f"not connected to the cluster's NATS ({cluster.state}): partition {partition}'s owner is unknown"
                why += "; retry"
            else:
                why = f"partition {partition} is between owners (a takeover is under way); retry"
            _retry_all(works, why)
            return
        for work in works:
            answers = await cluster.forward(owner, work.raw, work.source)
            if not answers:
                _retry_all([work], f"partition {partition}'s owner {owner} did not answer; retry")
                continue
            answer = msgspec.convert(answers[0], IngestResult)
            reason = None if answer.error is None else InputError(str(answer.error.get("reason", "refused")))
            work.finish(answer.outcome, answer, reason)

    async def _answer_forwarded(self, raw: bytes, source: str) -> bytes:
        """A message another node forwarded here (this node owns its partition): ingested, answered in JSON."""
        results = await self._ingest_stream(raw, source)
        return msgspec.json.encode(results)

    async def _adopt_partition(self, partition: int, batches: Sequence[ReplicaBatch]) -> None:
        """A partition taken over: its earlier owners' records into the local log (duplicates skipped), applied."""
        for batch in batches:
            envelopes = [r.envelope for r in batch.records]
            positions = await self.wal.append(envelopes, partition=partition, epoch=batch.epoch)
            await self._apply(envelopes, positions)

    def _decode(self, work: Work, received: str) -> list[Envelope]:
        if isinstance(work.parsed, InputError):
            raise work.parsed
        if work.parsed is not None:
            return [work.parsed]
        if work.kind is Kind.HL7V2:
            hl7 = self._decoder.hl7(
                work.raw, received_at=received, source=work.source, in_batch=work.in_batch, classified=work.classified
            )
            return [hl7]
        return self._decoder.fhir(work.raw, received_at=received, source=work.source)

    async def _apply(
        self, envelopes: Sequence[Envelope], positions: Sequence[Position], *, to_actors: bool = True
    ) -> None:
        """Durable records to their patients' actors (unless not `to_actors`), and news of them to the read side."""
        assert self._actors is not None
        for env, position in zip(envelopes, positions, strict=True):
            if position.duplicate:
                continue
            recorded_at = position.recorded_at or ""
            applied = Applied(position.lsn, recorded_at, env.message_id, env.events, env.lane)
            patients = tuple(p for p in (env.patient, *env.other_patients) if p)
            if self._projections is not None:
                self._projections.notify(Record(position.lsn, recorded_at, patients, env.events), env.lane)
            for patient in patients if to_actors else ():
                await self._actors.deliver(patient, applied)

    async def _reject(self, raw: bytes, source: str, error: InputError) -> IngestResult:
        """Never a silent drop: the bytes go to quarantine with the reason (invariant 2)."""
        qid = await anyio.to_thread.run_sync(
            lambda: self._quarantine.add(raw, source=source, reason=error.reason, error=error.to_dict(), at=utc_now())
        )
        _log.info("node.rejected", source=source, quarantine_id=qid, reason=error.reason)
        return IngestResult(Outcome.REJECTED, error={**error.to_dict(), "quarantine_id": qid})


# A chunk's lanes (None: not groupable), patient hints, and what a worker made of each (None: not parsed yet).
_Parsed = tuple[list[Classification | None], list[bytes | None], list[Envelope | InputError | None]]


def _moment(request: dict[str, object], name: str) -> str | None:
    """A time in a request, read strictly (`actors.parse_moment`); refused in one line otherwise."""
    value = request.get(name)
    if value is None:
        return None
    try:
        return parse_moment(str(value))
    except ValueError as exc:
        raise AdminError(f"{name}: {exc}") from None


def _groupable(piece: Piece) -> bool:
    """An HL7 v2 message cut cleanly: it may go in a lane group (anything else is answered one by one)."""
    return piece.kind is Kind.HL7V2 and piece.error is None


def _unpack(pieces: list[Piece], span: range, answer: tuple[list[Parsed], dict[int, InputError]]) -> _Parsed:
    """A worker's answer for the groupable pieces of `span`, spread back over the whole span."""
    parsed, refused = answer
    classified: list[Classification | None] = [None] * len(span)
    hints: list[bytes | None] = [None] * len(span)
    envelopes: list[Envelope | InputError | None] = [None] * len(span)
    k = 0
    for j, i in enumerate(span):
        if not _groupable(pieces[i]):
            continue
        made = parsed[k]
        classified[j], hints[j] = made.classified, made.hint
        envelopes[j] = refused.get(k, made.envelope)
        k += 1
    return classified, hints, envelopes


def _accept(owned: Sequence[tuple[Work, Sequence[Envelope]]], positions: Sequence[Position]) -> None:
    """Each message answered with its records' LSNs (a duplicate when all were there already)."""
    start = 0
    for work, made in owned:
        mine = positions[start : start + len(made)]
        start += len(made)
        lsns, duplicate = tuple(p.lsn for p in mine), all(p.duplicate for p in mine)
        warning = next((_replaced_text(env.invalid_text) for env in made if env.invalid_text), None)
        work.finish(Outcome.ACCEPTED, IngestResult(Outcome.ACCEPTED, lsns, duplicate), warning)


def _replaced_text(invalid: InvalidText) -> CharsetError:
    """What the sender is told (an ACK warning) of bytes replaced in its message, which was still stored."""
    return CharsetError(
        f"{invalid.count} byte sequence(s) not valid {invalid.charset} were replaced by U+FFFD, the first at byte "
        f"{invalid.first.byte_offset}; the message was stored, with its original bytes",
        invalid.first,
    )


def _retry_all(works: Sequence[Work], why: str) -> None:
    """A temporary failure: every one of these messages gets "retry" (AE/CE), and the sender sends it again."""
    error = TemporaryError(why)
    for work in works:
        work.finish(Outcome.RETRY, IngestResult(Outcome.RETRY, error=error.to_dict()), error)


_STREAM_WINDOW = 512  # messages of one input in flight at once, one by one
_GROUP_MESSAGES_MAX = 64  # messages of one input per window of lane groups
_PARSE_CHUNK_MESSAGES = 1024  # messages per hand-off to a parse worker
_PARSE_CHUNKS_AHEAD = 4  # chunks handed off before the loop has taken their turn


async def _until_signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            _log.info("node.stopping", signal=signal.Signals(signum).name)
            return
