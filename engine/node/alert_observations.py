"""What the alert rules look at, gathered from the node's parts (the watcher is handed `observe`)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import final

import anyio

from engine.alerts import Observation, RouteAge, SendersSeen
from engine.auth import ApiClient
from engine.node.refusals import Refusals
from engine.projections import ProjectionRunner
from engine.routes import Routes
from engine.search import SearchFollower

__all__ = ["AlertObservations"]


@final
class AlertObservations:
    """Reads the parts each time it is asked; a part that is off or restarting is simply not looked at."""

    def __init__(
        self,
        data_dir: Path,
        senders_seen: SendersSeen,
        refusals: Refusals,
        routes: Routes,
        *,
        search: Callable[[], SearchFollower | None],
        projections: Callable[[], ProjectionRunner | None],
        clients: Callable[[], list[ApiClient]] = list,
    ) -> None:
        self._data_dir = data_dir
        self._senders_seen = senders_seen
        self._refusals = refusals
        self._routes = routes
        self._search = search
        self._projections = projections
        self._clients = clients  # the API clients as stored (read in a worker thread)
        self._started_us = time.time_ns() // 1000

    async def observe(self) -> Observation:
        search, projections = self._search(), self._projections()
        indexed = await search.senders() if search is not None else []
        waiting = await self._refusals.open_by_age()
        usage = await anyio.to_thread.run_sync(shutil.disk_usage, self._data_dir)
        clients = await anyio.to_thread.run_sync(self._clients)
        return Observation(
            now_us=time.time_ns() // 1000,
            started_us=self._started_us,
            senders=self._senders_seen.merged(indexed),
            quarantine_open=sum(waiting.values()),
            read_side_lag=projections.lag()[0] if projections is not None else None,
            disk_free_percent=100.0 * usage.free / usage.total if usage.total else None,
            routes=self._route_ages(),
            token_expiries={c.id: c.expires_at for c in clients if not c.revoked},
        )

    def _route_ages(self) -> tuple[RouteAge, ...]:
        configs = self._routes.configs
        return tuple(
            RouteAge(route.name, lane.lane, lane.backlog, lane.oldest_age_s, configs[route.name].backlog_age_alert_s)
            for route in self._routes.statistics()
            for lane in route.lanes
            if route.name in configs
        )
