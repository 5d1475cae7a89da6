"""The cluster (node floor): partition leases, replication and failover over NATS JetStream.

`partitions` and `leases` are pure (which partition, which owner, when a
lease is stale); `replication` moves records between a node's log and the
stream, with fencing; `coordinator` is one node's part, run by the node.
"""

from engine.cluster.coordinator import Adopt, Cluster, ClusterStatistics, Forwarded, RecordRead, ingest_subject
from engine.cluster.leases import Freshness, Held, LeaseValue, MemberInfo
from engine.cluster.partitions import fair_shares, partition_of, plan
from engine.cluster.replication import FencedError, ReplicaBatch, ReplicaRecord, Replicator, decode_batch
from engine.cluster.view import UnreadableStreamError, read_leases, read_log, read_members, read_stream

__all__ = [
    "Adopt",
    "Cluster",
    "ClusterStatistics",
    "FencedError",
    "Forwarded",
    "Freshness",
    "Held",
    "LeaseValue",
    "MemberInfo",
    "RecordRead",
    "ReplicaBatch",
    "ReplicaRecord",
    "Replicator",
    "UnreadableStreamError",
    "decode_batch",
    "fair_shares",
    "ingest_subject",
    "partition_of",
    "plan",
    "read_leases",
    "read_log",
    "read_members",
    "read_stream",
]
