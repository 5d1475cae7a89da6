"""A clustered node's appends: each message to its patient's partition, served here or forwarded to its owner.

A partition this node owns is appended with the owner's epoch (fencing: a
deposed owner's append is refused), and answered once durable as its lane's
`cluster.ack` asks: locally durable, or also in the stream. A partition
another node owns is forwarded there, and that node's answer is the
message's. With no owner (a takeover under way, or NATS away) the sender is
told to retry: nothing is acknowledged that no owner holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import anyio
import msgspec

from engine.cluster import Cluster, FencedError
from engine.core.errors import InputError, TemporaryError
from engine.core.model import Envelope
from engine.core.outcome import IngestResult, Outcome
from engine.infra.config import Config
from engine.node.lane_items import Work
from engine.node.lane_worker import Decoded, accept, retry_all
from engine.wal import DiskFullError, Position, WALFailedError, WriteAheadLog

__all__ = ["PartitionRouter"]

_Applied = list[tuple[list[Envelope], list[Position]]]


@final
class PartitionRouter:
    """The lane worker's router (`engine.node.lane_worker.Router`) when the node is one of a cluster."""

    def __init__(self, cluster: Cluster, wal: WriteAheadLog, config: Config) -> None:
        self._cluster = cluster
        self._wal = wal
        self._config = config

    async def route(self, owned: Decoded) -> _Applied:
        """Every message to its partition's path, partitions side by side; what was appended here."""
        applied: _Applied = []
        by_partition: dict[int, Decoded] = {}
        for work, made in owned:
            if made:
                by_partition.setdefault(self._cluster.partition_of(made[0]), []).append((work, made))
            else:
                work.finish(Outcome.ACCEPTED, IngestResult(Outcome.ACCEPTED))
        async with anyio.create_task_group() as tg:
            for partition, mine in by_partition.items():
                tg.start_soon(self._append_partition, partition, mine, applied)
        return applied

    async def _append_partition(self, partition: int, owned: Decoded, applied: _Applied) -> None:
        """Messages of one partition: appended with the owner's epoch, answered once durable as each lane's ack asks."""
        cluster, timeout = self._cluster, self._config.mllp.ack_timeout_s
        epoch = cluster.enter(partition)
        if epoch is None:
            await self._forward(partition, [work for work, _made in owned])
            return
        works = [work for work, _made in owned]
        try:
            envelopes = [env for _work, made in owned for env in made]
            try:
                with anyio.fail_after(timeout):
                    await cluster.wait_room(partition, epoch)  # replication far behind: the sources wait
            except (FencedError, TimeoutError) as exc:
                retry_all(works, f"replication is behind: {exc or 'timed out'}; retry")
                return
            try:
                positions = await self._wal.append(envelopes, partition=partition, epoch=epoch)
            except (DiskFullError, WALFailedError) as exc:
                retry_all(works, str(exc))
                return
            applied.append((envelopes, positions))
            acks = self._config.cluster.ack
            if any(getattr(acks, env.lane.value) == "cluster" for env in envelopes):
                try:
                    with anyio.fail_after(timeout):
                        await cluster.wait_replicated(partition, epoch, max(p.lsn for p in positions))
                except (FencedError, TimeoutError) as exc:
                    # Durable here but not in the stream: the source retries (to the new owner, if it moved).
                    retry_all(works, f"not replicated: {str(exc) or 'the stream did not acknowledge in time'}; retry")
                    return
            accept(owned, positions)
        finally:
            cluster.leave(partition)

    async def _forward(self, partition: int, works: Sequence[Work]) -> None:
        """Messages of a partition this node does not serve: to its owner, whose answer is theirs."""
        cluster = self._cluster
        owner = cluster.owner(partition)
        if owner is None or owner == cluster.node or any(w.source.startswith("forwarded:") for w in works):
            # No owner now (a takeover in progress, or NATS away), or a forward that came back: retried shortly.
            if cluster.state != "connected":
                why = f"not connected to the cluster's NATS ({cluster.state}): partition {partition}'s owner is unknown"
                why += "; retry"
            else:
                why = f"partition {partition} is between owners (a takeover is under way); retry"
            retry_all(works, why)
            return
        for work in works:
            answers = await cluster.forward(owner, work.raw, work.source)
            if not answers:
                retry_all([work], f"partition {partition}'s owner {owner} did not answer; retry")
                continue
            answer = msgspec.convert(answers[0], IngestResult)
            kind = TemporaryError if answer.outcome is Outcome.RETRY else InputError
            reason = None if answer.error is None else kind(str(answer.error.get("reason", "refused")))
            work.finish(answer.outcome, answer, reason)
