"""Parts of a node made from its configuration: the MLLP server, the admin listener, the cluster, the read side."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import structlog
from anyio.abc import ByteStream
from anyio.streams.tls import TLSListener

from engine.cluster import Adopt, Cluster, Forwarded, RecordRead
from engine.core.errors import ConfigError
from engine.infra.config import Config, split_address
from engine.infra.tls import nats_security, server_context
from engine.ingress.mllp_answers import MLLPAnswers
from engine.ingress.mllp_listener import MLLPServer
from engine.projections import ProjectionRunner, dsn_of
from engine.wal import WriteAheadLog, audit_key_from_env

__all__ = ["admin_listener", "join_cluster", "mllp_server", "read_side", "warn_if_unkeyed"]

_log = structlog.get_logger("vigil.node")


def refuse_unbuilt(config: Config) -> None:
    """A setting whose part no node has yet: refused at start, never a knob that silently does nothing.

    Raises:
        ConfigError: `[retention]` in a cluster. A takeover reads the records this node
            had not yet published from its own log (`Cluster.orphans`), and nothing yet
            tells the archive how far that is: a segment archived too soon would lose them.
    """
    if config.retention.enabled and config.cluster.enabled:
        raise ConfigError(
            "retention.archive with cluster.enabled: a node in a cluster does not archive its log yet "
            "(a takeover may still need the records it has not published); leave retention.archive empty"
        )


def warn_if_unkeyed(config: Config) -> bool:
    """Whether the audit key is set; a warning saying what is lost when it is not."""
    keyed = audit_key_from_env(config.audit.key_env) is not None
    if not keyed:
        _log.warning(
            "node.audit_unkeyed",
            variable=config.audit.key_env,
            consequence="no keyed checkpoints: whoever can rewrite the whole log can rebuild its hash chain "
            "unseen, and `vigil audit verify` has no key to check it against",
            fix=f"set {config.audit.key_env} to a secret of at least 16 bytes before starting the node",
        )
    return keyed


def mllp_server(config: Config, answers: MLLPAnswers, tls: ssl.SSLContext | None) -> MLLPServer:
    """The MLLP listener, answering each frame through `answers`; TLS only when given a context."""
    return MLLPServer(
        config.mllp, config.ingest.message_bytes_max, answers.answer_frame, answers.refuse_framing, tls=tls
    )


async def admin_listener(config: Config, base: Path) -> tuple[anyio.abc.Listener[ByteStream], int]:
    """The admin endpoint on the network, and its port: TLS only (it carries passwords and PHI)."""
    admin = config.admin
    context = server_context(admin, base, where="admin")
    if context is None:
        raise ConfigError("admin.listen needs admin.tls_cert_file and admin.tls_key_file: never plain TCP")
    host, port = split_address(admin.listen, "admin.listen")
    tcp = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = tcp.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 -- anyio, not Django
    timeout = config.mllp.tls_handshake_timeout_s
    return TLSListener(tcp, context, standard_compatible=False, handshake_timeout=timeout), bound


def join_cluster(
    config: Config,
    wal: WriteAheadLog,
    base: Path,
    *,
    adopt: Adopt,
    forwarded: Forwarded,
    route_marks: Callable[[], Mapping[str, int]],
    record_read: RecordRead,
) -> Cluster:
    """This node's part in the cluster (`[cluster]`); its NATS credentials and TLS are `[nats]`'s."""
    servers = config.cluster.servers or config.nats.servers
    if not servers:
        raise ConfigError("cluster.enabled needs NATS servers: cluster.servers, nats.servers or --nats URL")
    security = nats_security(config.nats, base)
    return Cluster(
        config.cluster,
        config.node.id,
        wal,
        servers=servers,
        security=security,
        adopt=adopt,
        forwarded=forwarded,
        record_read=record_read,
        route_marks=route_marks,
    )


def read_side(config: Config, wal: WriteAheadLog, base: Path, busy: Callable[[], bool]) -> ProjectionRunner | None:
    """The projection runner when a DSN is configured; without one the node runs without a read side."""
    dsn = dsn_of(config.projections)
    if dsn is None:
        return None
    rules = config.lanes.rules
    flags = (*rules.critical_abnormal_flags, *rules.local_critical_flags)
    return ProjectionRunner(wal, config.projections, dsn, base=base, critical_flags=flags, busy=busy)
