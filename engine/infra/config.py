"""The node configuration: `config.toml` decoded into frozen Structs.

Unknown keys are refused (a misspelt key silently ignored is how a hospital
ends up running on defaults it did not choose), and a wrong value gives one
line naming the key and what is allowed. Keys carry their unit last
(`message_bytes_max`).
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Final, Literal, final, get_args

import msgspec

from engine.auth import AuthConfig, WorkstationConfig
from engine.core.errors import CharsetError, ConfigError
from engine.core.hl7 import CharsetDefaults, resolve_charset
from engine.infra.collector import CollectorConfig
from engine.infra.route_config import RouteConfig
from lanes import ClassificationRules, PacingSettings, SchedulerSettings

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "SUPERVISED_CHILDREN",
    "AdminConfig",
    "AlertsConfig",
    "AuditConfig",
    "ClusterAckConfig",
    "ClusterConfig",
    "Config",
    "HttpConfig",
    "IngestConfig",
    "LanesConfig",
    "MLLPConfig",
    "NatsConfig",
    "NatsSubjectConfig",
    "NodeConfig",
    "ProjectionsConfig",
    "QuietFeedConfig",
    "RestartLimits",
    "RetentionConfig",
    "SearchConfig",
    "SupervisionConfig",
    "WalConfig",
    "decode_config",
    "load_config",
    "split_address",
]

# The repository's config.toml: the embedded default.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config.toml"

_MIB = 1024 * 1024


@final
class IngestConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits on what one source may send."""

    message_bytes_max: Annotated[int, msgspec.Meta(ge=1024, le=1024 * _MIB)] = 16 * _MIB
    # The largest whole input read at once: stdin, or one file from a drop folder.
    input_bytes_max: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1024 * _MIB)] = 1024 * _MIB
    # A drop folder (--watch) is looked at this often; a file must be this old to be taken.
    watch_poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 0.5
    # An input of at least this many messages (stdin, a file, a NATS batch) is parsed in
    # `parse_workers` worker processes beside the event loop (0: always in the loop).
    parse_workers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 1
    # Their CPU priority below the node's (added to its nice value): bulk parsing must not
    # take the CPU from the event loop that answers critical traffic.
    parse_workers_nice: Annotated[int, msgspec.Meta(ge=0, le=19)] = 10
    parse_pool_messages_min: Annotated[int, msgspec.Meta(ge=1)] = 2048
    # A single HL7 v2 message at least this large is classified and parsed in a parse
    # worker too, away from the loop that answers critical traffic.
    large_message_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024
    # The character set of HL7 v2 messages whose MSH-18 is empty: the node's, and
    # per sender ("MSH-3|MSH-4" = set). MSH-18 names (8859/1) or codec names (cp1252).
    hl7_charset: str = "UNICODE UTF-8"
    hl7_sender_charsets: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.charsets()  # an unknown set is refused at load, not at the first message

    def charsets(self) -> CharsetDefaults:
        """The defaults the HL7 decoder applies.

        Raises:
            ValueError: a set Vigil cannot read, naming the key.
        """
        try:
            default = resolve_charset(self.hl7_charset)
        except CharsetError as exc:
            raise ValueError(f"hl7_charset: {exc.reason}") from None
        senders: dict[str, str] = {}
        for sender, name in self.hl7_sender_charsets.items():
            try:
                senders[sender] = resolve_charset(name)
            except CharsetError as exc:
                raise ValueError(f"hl7_sender_charsets.{sender}: {exc.reason}") from None
        return CharsetDefaults(default, senders)


_KIB = 1024


@final
class NodeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The node: its id, where it keeps its data (relative to the config file), how long a stop may take.

    `switch_interval_ms` is how long another thread of the node (splitting a
    large input, the log's sync thread) may hold the interpreter before the
    event loop gets it back (`sys.setswitchinterval`): at Python's 5 ms, each
    wake-up of the loop could wait that long while a dropped file was split.
    """

    data_dir: str = ".vigil"
    id: str = "vigil-1"
    stop_deadline_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    summary_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    switch_interval_ms: Annotated[float, msgspec.Meta(ge=0.05, le=100)] = 0.5


@final
class MLLPConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The MLLP listener's bounds: one slow or hostile peer must never hurt the others.

    Attributes:
        connections_max: connections served at once; more are refused at once.
        connections_per_address_max: connections served at once from one peer
            address, so one host (or one attacker) cannot take every slot.
        idle_timeout_s: a connection that sends no message this long is closed
            (a byte that begins no frame does not count; a frame in progress is
            held to `frame_timeout_s` instead).
        frame_timeout_s, frame_bytes_per_s_min: once a frame's start block has
            come, the frame must end within `frame_timeout_s`, plus a second for
            every `frame_bytes_per_s_min` bytes received (a large message on a
            slow link completes; a peer trickling a byte now and then does not):
            else the connection is closed.
        ack_timeout_s: the longest a message may wait for its ACK (in a full
            lane, say) before the sender gets AE and should retry.
        tls_cert_file, tls_key_file: PEM files (relative to the configuration
            file); when given, the listener speaks only TLS (1.2 or later).
        tls_client_ca_file: when given, a peer must present a certificate
            signed by this CA (mutual TLS).
        tls_handshake_timeout_s: a peer that has not finished its handshake
            this long is dropped.
    """

    connections_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    connections_per_address_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 32
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    frame_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    frame_bytes_per_s_min: Annotated[int, msgspec.Meta(ge=1)] = 1000
    ack_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    tls_handshake_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0


@final
class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[admin]`: the admin endpoint over the network, beside its Unix socket.

    Attributes:
        listen: HOST:PORT to serve on (port 0: any free port); empty: the
            Unix socket only (the default).
        tls_cert_file, tls_key_file: required with `listen`: the endpoint
            carries passwords and PHI, so over a network it speaks only TLS.
        tls_client_ca_file: when given, a client must present a certificate
            signed by this CA (mutual TLS), before any session is asked for.
        connections_max: connections served at once.
    """

    listen: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    connections_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64


@final
class HttpConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[http]`: the node's HTTP face (FHIR REST, HL7 v2 and FHIR in, probes and metrics).

    Attributes:
        listen: HOST:PORT to serve on (port 0: any free port); empty: off.
        tls_cert_file, tls_key_file: HTTPS. Required unless `listen` is a
            loopback address (a proxy on the same host terminating TLS):
            the API carries PHI and bearer tokens.
        body_bytes_max: the largest request body taken (413 past it).
        keep_alive_s: an idle connection is closed after this long.
        grace_s: on stop, requests in progress get this long to finish.
        console_logins_max: web console logins per minute from one address
            (on top of the account lockout after failed passwords).
        observations_kept: FHIR reads keep this many results' Observations
            made and encoded (about 1.5 KB each), least recently read dropped
            first: a record read again costs its new results, not all of them.
    """

    listen: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    body_bytes_max: Annotated[int, msgspec.Meta(ge=1024, le=1024 * _MIB)] = 16 * _MIB
    keep_alive_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    grace_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 3.0
    console_logins_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    observations_kept: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 20_000

    def __post_init__(self) -> None:
        if not self.listen:
            return
        host, _port = split_address(self.listen, "http.listen")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if not self.tls_cert_file and host not in _LOOPBACK:
            raise ValueError(
                f"listen = {self.listen!r} is not a loopback address: HTTPS is required there "
                "(tls_cert_file, tls_key_file), as the API carries PHI and bearer tokens"
            )


_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})


@final
class NatsSubjectConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One NATS subject the node ingests from.

    Attributes:
        subject: the subject (wildcards allowed).
        mode: "jetstream" (a durable pull consumer: a message is acked only
            once durable in the log, so nothing is lost across a crash) or
            "core" (plain NATS: at most once on the wire; a request gets the
            result as its reply, so a requester can retry).
        stream: jetstream: the stream that holds the subject (it must exist:
            the node does not create streams on a shared broker).
        durable: jetstream: the durable consumer's name (made if absent).
    """

    subject: str
    mode: Literal["jetstream", "core"] = "jetstream"
    stream: str = ""
    durable: str = "vigil"


@final
class NatsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """NATS sources: none unless `servers` is given.

    Attributes:
        servers: NATS URLs, e.g. ["nats://127.0.0.1:4222"]; empty: no NATS.
        subjects: the subjects to ingest from.
        fetch_messages_max: jetstream: messages pulled per fetch; the next
            fetch waits for these to be answered (backpressure).
        redeliver_delay_s: jetstream: a message that met a temporary failure
            is redelivered after this long.
        ack_wait_s: jetstream: a message fetched but not answered this long
            (the node died holding it) is redelivered; set on the consumer
            when the node makes it.
        credentials_file: a NATS credentials file (JWT and NKey seed), relative
            to the config file.
        token_env, user, password_env: a token, or a user and password; the
            secrets come from the environment variables named, never this file.
        tls_ca_file, tls_cert_file, tls_key_file: TLS to the broker: the CA
            that signed its certificate (the system's CAs when empty) and, for
            mutual TLS, this node's certificate and key. TLS is on when any
            is given or a server URL is tls://.
    """

    servers: tuple[str, ...] = ()
    subjects: tuple[NatsSubjectConfig, ...] = ()
    fetch_messages_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    redeliver_delay_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    ack_wait_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 30.0
    credentials_file: str = ""
    token_env: str = ""
    user: str = ""
    password_env: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


AckPolicy = Literal["local", "cluster"]


@final
class ClusterAckConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a source is acknowledged, per lane: "local" (after the local fsync) or "cluster" (and the stream's ack).

    "cluster" is the default for clinical lanes: a node that dies right after
    acknowledging loses nothing, its successor has the record. Billing may
    take "local": it is then acknowledged faster, and replicated a moment later.
    """

    critical: AckPolicy = "cluster"
    standard: AckPolicy = "cluster"
    batch: AckPolicy = "local"


@final
class ClusterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Several nodes over NATS JetStream (DESIGN.md, "Cluster"); off in the embedded default.

    Attributes:
        enabled: join a cluster (`vigil run --nats URL --node-id ID` also does).
        servers: the NATS URLs; empty: `nats.servers` (credentials and TLS
            are always `nats.*`).
        partitions: patient keys hash to this many partitions. Fixed for the
            cluster's life: changing it moves every patient.
        lease_ttl_s: a partition whose owner has not renewed its lease for this
            long (as each observer sees it, on its own clock) may be taken;
            the owner itself stops serving it this long after its last
            successful renewal began, so it always stops first.
        renew_interval_s: leases are renewed, and the members' heartbeats
            written, this often. Keep it well under `lease_ttl_s`.
        replicas: JetStream replicas of the log stream and the buckets (3 in a
            three-server cluster); the node warns when the stream has fewer.
        stream, subject_prefix: the replicated log: partition N's records go
            to `<subject_prefix>.N` in `stream`.
        bucket_prefix: the key-value buckets `<prefix>_leases`, `<prefix>_members` and `<prefix>_routes`.
        placement: the NATS cluster (region) that holds the stream and the
            buckets when several are joined by gateways; empty: the server chooses.
        publish_timeout_s: one replication publish waits this long for the
            stream's ack before it is retried (with the same Nats-Msg-Id).
        forward_timeout_s: a message for another node's partition is
            forwarded there and waits this long for its answer.
        publish_records_max: records of one partition in one stream message.
        pending_records_max: records of one partition durable here but not yet
            in the stream; past it, new messages for that partition wait
            (backpressure on the sources, even for lanes acknowledged `local`).
        route_progress_interval_s: how often each route's position on each
            served partition is written to the `<prefix>_routes` bucket, so a
            node taking the partition over does not deliver again what was
            delivered (what the last write did not cover is sent again).
        ack: per lane, "local" or "cluster".
    """

    enabled: bool = False
    servers: tuple[str, ...] = ()
    partitions: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=0.5, le=600)] = 2.0
    renew_interval_s: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 0.4
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3
    stream: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "VIGIL_LOG"
    subject_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = "vigil.log"
    bucket_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")] = "vigil"
    placement: str = ""
    publish_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 5.0
    forward_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    publish_records_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    pending_records_max: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 65_536
    route_progress_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    ack: ClusterAckConfig = ClusterAckConfig()

    def __post_init__(self) -> None:
        if self.renew_interval_s * 2 > self.lease_ttl_s:
            raise ValueError("cluster.renew_interval_s must be at most half of cluster.lease_ttl_s")


@final
class WalConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The write-ahead log.

    Attributes:
        segment_bytes_max: a segment is sealed and a new one begun past this size.
        commit_delay_ms: how long a group of batch-lane records only may wait
            for more before its fsync, when the group before it had company (a
            lone sender never waits); groups holding any critical or standard
            record never wait.
        group_records_max: the most records one write + fsync covers.
        batch_group_records_max: the most records a group of batch-lane
            records only covers: an urgent append arriving meanwhile waits for
            that group's framing, write and fsync, so it is kept small.
        group_bytes_max: the most message bytes one write covers (a single
            larger append is written alone).
        queue_appends_max: appends waiting for the writer before callers wait
            too (backpressure).
        checkpoint_records_interval: a checkpoint every this many records;
            recovery verifies the hash chain from the last checkpoint.
        sparse_index_records_interval: one (LSN, offset) index entry per this
            many records.
        sync: where a group's write and fsync run. "auto" (the default): in
            a worker thread while urgent messages come together (this group
            or the one before held more than one record) and no batch work
            is in the group or queued behind it, so the node parses the next
            urgent messages during the fsync; on the event loop's thread
            otherwise (one message at a time leaves nothing to parse
            meanwhile, and under a billing flood the hop to the thread cost
            the routine lane more than the fsync). "inline": always on the
            event loop's thread. "thread": always in a worker thread
            (network or spinning storage, milliseconds per fsync).
    """

    segment_bytes_max: Annotated[int, msgspec.Meta(ge=64 * _KIB)] = 64 * _MIB
    commit_delay_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    group_records_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1024
    batch_group_records_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 64
    group_bytes_max: Annotated[int, msgspec.Meta(ge=64 * _KIB, le=1024 * _MIB)] = 8 * _MIB
    queue_appends_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 4096
    checkpoint_records_interval: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    sparse_index_records_interval: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 64
    sync: Literal["auto", "inline", "thread"] = "auto"


@final
class AuditConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The keyed audit checkpoints.

    The key is read from the environment variable named by `key_env`, never
    from this file or the repository. Without it, checkpoints are unkeyed and
    `vigil audit verify` says so.
    """

    key_env: str = "VIGIL_AUDIT_KEY"


@final
class ProjectionsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The read side in PostgreSQL: none unless a DSN is given (the embedded default needs no database).

    Attributes:
        dsn_env: the environment variable holding the DSN (preferred: a DSN
            may hold a password, and secrets stay out of files).
        dsn: a DSN written here (without a password), used when `dsn_env` is unset.
        schema: the PostgreSQL schema holding the read models (made if absent).
        pool_connections_min, pool_connections_max: the connection pool.
        batch_records_max: log records per transaction.
        connect_timeout_s, command_timeout_s: a slow or stuck database is
            given up on after this long, and retried.
        retry_delay_max_s: the longest wait between attempts while the
            database is unreachable.
        ssl_mode: disable, prefer, require, verify-ca or verify-full (libpq's meanings).
        ssl_root_cert_file: the CA to verify the server with (verify-ca/verify-full).
        critical_fast_path: write critical results to the worklist at once,
            ahead of the ordered cursor (which still applies them in order).
    """

    dsn_env: str = "VIGIL_PG_DSN"
    dsn: str = ""
    schema: Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "vigil"
    pool_connections_min: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    pool_connections_max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4
    batch_records_max: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20_000
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 5.0
    command_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 60.0
    retry_delay_max_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    ssl_mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    ssl_root_cert_file: str = ""
    critical_fast_path: bool = True


@final
class ActorsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The patient actors: how long an idle one stays in memory, and how many may.

    Attributes:
        idle_timeout_s: an actor with no traffic this long is passivated (a
            snapshot kept, its record let go from memory).
        active_max: more active actors than this: the least recently used go first.
        snapshot_min_records: a passivated actor's record is snapshotted only
            when it gained this many facts since its last snapshot (a merged-in
            history counts): a patient seen once or twice is read back from the
            log (microseconds a record) rather than cost a write and an fsync.
    """

    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    active_max: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    snapshot_min_records: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 16


# The node's supervised children (`vigil status` lists them). The log is not among those that may be
# restarted: a failed fsync is final for the process (`engine.wal.errors`), so it allows no restart.
SUPERVISED_CHILDREN = (
    "patients",
    "lanes",
    "projections",
    "cluster",
    "admin",
    "summaries",
    "collector",
    "alerts",
    "mllp",
    "drop_folder",
    "nats",
)


@final
class RestartLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One child's own restart allowance: more than `intensity` restarts within `period_s` and the node stops."""

    intensity: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    period_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0


@final
class SupervisionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The node's root supervisor: how often a crashing part is restarted before the node gives up.

    The defaults favour staying up: with the back-off doubling to 30 s, a
    part that keeps failing (a share that is gone) is retried every 15-30 s
    and never uses up 10 restarts a minute, so the node keeps serving its
    other sources; a part that fails faster than its back-off allows, or one
    given a smaller allowance, stops the node.

    Attributes:
        intensity, period_s: the allowance of a child with none of its own.
        backoff_base_s, backoff_max_s: the wait before a restart, doubling
            from the base up to the maximum (with jitter).
        children: a child's own allowance, by name (`SUPERVISED_CHILDREN`).
    """

    intensity: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    period_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    backoff_base_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.5
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    children: dict[str, RestartLimits] = {}

    def __post_init__(self) -> None:
        unknown = sorted(set(self.children) - set(SUPERVISED_CHILDREN))
        if unknown:
            raise ValueError(f"unknown child {unknown[0]!r}; one of {', '.join(SUPERVISED_CHILDREN)}")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s")


@final
class LanesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Lane settings: `rules` decide which message goes to which lane, `scheduler` how lanes share the node,
    `pacing` how batch work steps aside on the event loop for urgent messages in flight."""

    rules: ClassificationRules = ClassificationRules()
    scheduler: SchedulerSettings = SchedulerSettings()
    pacing: PacingSettings = PacingSettings()


@final
class SearchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Message search (`vigil log --control-id ...`): an index of every logged message's metadata.

    Attributes:
        enabled: the node keeps the index up with its log (off: a search
            catches it up itself, only when no node serves the log).
        interval_s: how often the node indexes what became durable since.
        slice_records: records read and indexed per slice; none while a
            message is in flight (a flood is indexed once it has passed;
            `vigil log` indexes what is missing itself).
    """

    enabled: bool = True
    interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    slice_records: Annotated[int, msgspec.Meta(ge=1)] = 1000


@final
class QuietFeedConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A feed expected to speak: `sender` (MSH-3^MSH-4, as `vigil log --sender` takes it) at least every `within_s`."""

    sender: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    within_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)]


@final
class RetentionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long the log keeps its records before they move to the archive (`[retention]`).

    Nothing leaves the log unless `archive` is set: it is a medical record.
    The unit is a sealed segment: it is archived (compressed, with its place
    in the hash chain) once every record in it is older than its lane's
    period, every reader of the log is past it, and every patient in it has
    a snapshot past it. A lane whose period is 0 keeps its records for good,
    and so every segment that holds one.

    Attributes:
        archive: the folder archived segments go to (relative to the data
            directory unless absolute); "" keeps everything in the log.
        critical_days: how long critical-lane records stay in the log (0: for good).
        standard_days: the same for the standard lane.
        batch_days: the same for the batch lane (billing may go sooner).
        interval_s: how often the node looks for segments to archive.
        segments_per_pass_max: the most segments archived in one look (the
            rest wait for the next): each is read whole and compressed.
    """

    archive: str = ""
    critical_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    standard_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    batch_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 3600.0
    segments_per_pass_max: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 16

    @property
    def enabled(self) -> bool:
        return bool(self.archive)

    def folder(self, data_dir: Path) -> Path:
        """The archive folder: `archive`, relative to the data directory unless absolute."""
        return data_dir / self.archive

    def keep_days(self, lane: str) -> float:
        """A lane's period in days (0: for good)."""
        return {"critical": self.critical_days, "standard": self.standard_days, "batch": self.batch_days}[lane]


@final
class AlertsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Alerts: rules judged every `interval_s`; each alert raised and cleared once.

    An alert is a log line (`alert.raised`, `alert.cleared`), a metric
    (`vigil_alert_active`), a line in `vigil status`, and, with `webhook_url`,
    an HTTP POST of JSON. A limit of 0 turns its rule off.

    Attributes:
        interval_s: how often the rules are judged.
        quiet: feeds expected to speak (`[[alerts.quiet]]`): silent past
            `within_s` (counted from the node's start for one never heard) is
            an alert.
        quarantine_open_max: more open quarantine items than this.
        read_side_lag_max_records: the read side (PostgreSQL) this many
            records behind the log.
        disk_free_min_percent: the data directory's file system this full.
        routes: a route's oldest undelivered message older than the route's
            `backlog_age_alert_s`.
        client_token_warn_days: an API client's token expiring within this
            many days (or expired): rotate it before its calls are refused.
        webhook_url: where each raised and cleared alert is POSTed; https,
            unless the host is this one.
        webhook_token_file: a bearer token for the webhook, read at start.
        webhook_timeout_s: one POST's limit; a failed one is tried three
            times, then counted and logged (`alert.webhook_failed`).
    """

    interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 15.0
    quiet: tuple[QuietFeedConfig, ...] = ()
    quarantine_open_max: Annotated[int, msgspec.Meta(ge=0)] = 100
    read_side_lag_max_records: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    disk_free_min_percent: Annotated[float, msgspec.Meta(ge=0, le=100)] = 10.0
    routes: bool = True
    client_token_warn_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = 14
    webhook_url: str = ""
    webhook_token_file: str = ""
    webhook_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0

    def __post_init__(self) -> None:
        senders = [feed.sender for feed in self.quiet]
        twice = sorted({sender for sender in senders if senders.count(sender) > 1})
        if twice:
            raise ValueError(f"quiet: the sender {twice[0]!r} is listed twice")
        if self.webhook_url:
            url = urllib.parse.urlsplit(self.webhook_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"webhook_url = {self.webhook_url!r} is not an http(s) URL")
            if url.scheme == "http" and url.hostname not in _LOOPBACK:
                raise ValueError(f"webhook_url = {self.webhook_url!r}: https is required off this host")


@final
class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole node configuration."""

    node: NodeConfig = NodeConfig()
    ingest: IngestConfig = IngestConfig()
    mllp: MLLPConfig = MLLPConfig()
    admin: AdminConfig = AdminConfig()
    http: HttpConfig = HttpConfig()
    nats: NatsConfig = NatsConfig()
    cluster: ClusterConfig = ClusterConfig()
    wal: WalConfig = WalConfig()
    audit: AuditConfig = AuditConfig()
    projections: ProjectionsConfig = ProjectionsConfig()
    lanes: LanesConfig = LanesConfig()
    actors: ActorsConfig = ActorsConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    auth: AuthConfig = AuthConfig()
    collector: CollectorConfig = CollectorConfig()
    workstation: WorkstationConfig = WorkstationConfig()
    search: SearchConfig = SearchConfig()
    alerts: AlertsConfig = AlertsConfig()
    retention: RetentionConfig = RetentionConfig()
    routes: tuple[RouteConfig, ...] = ()

    def __post_init__(self) -> None:
        names = [route.name for route in self.routes]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"routes: the name {twice[0]!r} is used twice")


_AT = re.compile(r"\s*- at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")
_INDEX = re.compile(r"\[\d+\]$")


def split_address(value: str, key: str) -> tuple[str, int]:
    """HOST:PORT as (host, port).

    Raises:
        ConfigError: `value` (given as `key`) is not HOST:PORT.
    """
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key}: {value!r} is not HOST:PORT")
    if int(port) > 65535:
        raise ConfigError(f"{key}: {value!r}: the port must be 0 to 65535")
    return host, int(port)


def decode_config(data: bytes | str, source: str = "config.toml") -> Config:
    """Decode TOML text into a `Config`.

    Raises:
        ConfigError: one line naming the file, the key and what is allowed.
    """
    try:
        return msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def load_config(path: Path | None = None) -> Config:
    """Read and decode a configuration file (the embedded default when None).

    Raises:
        ConfigError: the file cannot be read or holds a wrong value.
    """
    path = path if path is not None else DEFAULT_CONFIG_PATH
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    return decode_config(data, str(path))


def _explain(message: str) -> str:
    m = _AT.search(message)
    where = m.group(1) if m else ""
    text = _AT.sub("", message)
    unknown = _UNKNOWN.match(text)
    if unknown:
        key = f"{where}.{unknown.group(1)}" if where else unknown.group(1)
        allowed = _allowed_keys(where)
        return f"unknown key {key} (allowed: {', '.join(allowed)})"
    return f"{where or 'top level'}: {text[0].lower()}{text[1:]}".replace("`", "")


def _allowed_keys(where: str) -> list[str]:
    """The keys a table may hold, found by walking the Struct types."""
    cls: Any = Config
    for part in [p for p in where.split(".") if p]:
        name = _INDEX.sub("", part)  # `routes[0]`: an entry of an array of tables
        field = next((f for f in msgspec.structs.fields(cls) if f.encode_name == name), None)
        if field is None:
            return []
        cls = field.type
        if name != part:
            cls = next(iter(get_args(cls)), None)
    return [f.encode_name for f in msgspec.structs.fields(cls)] if isinstance(cls, type) else []
