"""Leases and heartbeats as one node sees them (pure: time is passed in, from a monotonic clock).

A lease is a key in a JetStream key-value bucket, written by compare-and-set
on the key's revision. Nobody compares wall clocks: an observer notes *on
its own clock* when it first saw each revision of a key, and takes a lease
as expired when that revision has stood for `ttl_s`. The holder stops
serving `ttl_s` after its last *successful renewal began*. The revision an
observer sees was written after that renewal began, so the holder always
stops before any observer may take over (clock rates aside, which drift by
parts per million).

A member's heartbeat is the same rule on another bucket: alive while its
revision keeps changing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import final

import msgspec

__all__ = ["Freshness", "Held", "LeaseValue", "MemberInfo", "decode_lease", "decode_member"]


@final
class LeaseValue(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A partition lease's value: its owner ("" once released) and the owner's epoch.

    The epoch grows by one at every change of hands; every record the owner
    writes carries it.
    """

    owner: str
    epoch: int


@final
class MemberInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A member's heartbeat: who it is and what it serves (what `vigil cluster status` shows).

    Attributes:
        node: the node id.
        started_at: when it started (ISO 8601, for people).
        serving: the partitions it serves now.
        last_lsn: its local log's last LSN.
        replication_lag_records: its records not yet acknowledged by the stream.
        nats: "connected", or why not.
    """

    node: str
    started_at: str
    serving: tuple[int, ...] = ()
    last_lsn: int = 0
    replication_lag_records: int = 0
    nats: str = "connected"


_LEASE = msgspec.json.Decoder(LeaseValue)
_MEMBER = msgspec.json.Decoder(MemberInfo)


def decode_lease(data: bytes | None) -> LeaseValue | None:
    """A lease value, or None when it is not one (a foreign or damaged value counts as no lease)."""
    try:
        return _LEASE.decode(data) if data else None
    except msgspec.DecodeError:
        return None


def decode_member(data: bytes | None) -> MemberInfo | None:
    """A heartbeat value, or None when it is not one."""
    try:
        return _MEMBER.decode(data) if data else None
    except msgspec.DecodeError:
        return None


@dataclass
class _Seen:
    revision: int
    seen_at: float


@final
class Freshness:
    """When this node first saw each key's current revision: a key is fresh until it stood still for `ttl_s`."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._seen: dict[str, _Seen] = {}

    def observe(self, key: str, revision: int, now: float) -> None:
        """A key read at `revision` (a new revision restarts its clock)."""
        seen = self._seen.get(key)
        if seen is None or seen.revision != revision:
            self._seen[key] = _Seen(revision, now)

    def forget(self, key: str) -> None:
        """The key is gone (deleted, or never written)."""
        self._seen.pop(key, None)

    def fresh(self, key: str, now: float) -> bool:
        """Whether the key's revision changed less than `ttl_s` ago (as this node saw it)."""
        seen = self._seen.get(key)
        return seen is not None and now - seen.seen_at < self._ttl_s

    def age_s(self, key: str, now: float) -> float | None:
        """How long the key's current revision has stood, as this node saw it."""
        seen = self._seen.get(key)
        return None if seen is None else now - seen.seen_at

    def revision(self, key: str) -> int | None:
        seen = self._seen.get(key)
        return None if seen is None else seen.revision


@final
@dataclass
class Held:
    """A lease this node holds: its epoch, the key's revision, and until when it may serve.

    `valid_until` is the start of the last successful renewal plus the TTL,
    on this node's monotonic clock.
    """

    partition: int
    epoch: int
    revision: int
    valid_until: float

    def valid(self, now: float) -> bool:
        return now < self.valid_until
