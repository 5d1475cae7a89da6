"""What a node makes over its open log: the lane worker, its scheduler, intake that feeds it, the pacer they share."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import final

from engine.cluster import Cluster
from engine.core.decode import Decoder
from engine.infra.config import Config
from engine.infra.telemetry import Telemetry
from engine.ingress.parse_pool import ParsePool
from engine.node.fanout import Fanout
from engine.node.intake import Intake
from engine.node.lane_items import Group
from engine.node.lane_worker import LaneWorker
from engine.node.partition_router import PartitionRouter
from engine.node.refusals import Refusals
from engine.wal import WriteAheadLog
from lanes import LaneScheduler, Pacer

__all__ = ["Parts"]


@final
class Parts:
    """The message path of a running node, from a source's call to the durable append; made by `over`."""

    def __init__(
        self, wal: WriteAheadLog, intake: Intake, worker: LaneWorker, scheduler: LaneScheduler[Group], pacer: Pacer
    ) -> None:
        self.wal = wal
        self.intake = intake
        self.worker = worker
        self.scheduler = scheduler
        self.pacer = pacer

    @classmethod
    def over(
        cls,
        wal: WriteAheadLog,
        config: Config,
        decoder: Decoder,
        parse_pool: ParsePool,
        *,
        refusals: Refusals,
        fanout: Fanout,
        telemetry: Telemetry,
        clock: Callable[[], datetime],
        cluster: Cluster | None,
    ) -> Parts:
        """Each part handed what it needs: in a cluster the lane worker appends through the partition router."""
        router = PartitionRouter(cluster, wal, config) if cluster is not None else None
        pacer = Pacer(config.lanes.pacing)
        worker = LaneWorker(wal, decoder, refusals, fanout, telemetry, pacer=pacer, clock=clock, router=router)
        scheduler = LaneScheduler[Group](config.lanes.scheduler, worker.handle)
        intake = Intake(
            config, decoder.classifier, parse_pool, scheduler, refusals, pacer=pacer, telemetry=telemetry, clock=clock
        )
        return cls(wal, intake, worker, scheduler, pacer)
