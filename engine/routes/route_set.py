"""The node's routes: one supervised child each, told of every durable record, found by name for operators."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import final

import anyio
from anyio.abc import TaskStatus

from engine.core.hl7 import CharsetDefaults
from engine.infra.route_config import RouteConfig
from engine.routes.reading import LogReader
from engine.routes.route import Route, RouteStatistics

__all__ = ["Routes"]


@final
class Routes:
    """The configured routes; each runs as `run(name)` under the node's supervisor (anew after a crash)."""

    def __init__(
        self,
        configs: Sequence[RouteConfig],
        state_root: Path,
        *,
        config_dir: Path,
        tls_context: Callable[[Path | None], ssl.SSLContext],
        nats_servers: Sequence[str] = (),
        nats_security: Callable[[], dict[str, object]] = dict,
        charsets: CharsetDefaults | None = None,
    ) -> None:
        self.configs = {c.name: c for c in configs}
        self._charsets = charsets
        self._tls_context = tls_context
        self._nats = (nats_servers, nats_security)
        self._state_root = state_root
        self._config_dir = config_dir
        self._running: dict[str, Route] = {}
        # Per route, messages its namesake on another node had settled before this node took their partition
        # over: kept here so they outlive a route's restart; each goes when the route reads it.
        self._elsewhere: dict[str, set[str]] = {name: set() for name in self.configs}

    def notify(self) -> None:
        """New durable records: every running route reads on."""
        for route in self._running.values():
            route.notify()

    async def run(
        self, name: str, log: Callable[[], LogReader], *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        route = Route(
            self.configs[name],
            log(),
            self._state_root / name,
            config_dir=self._config_dir,
            tls_context=self._tls_context,
            nats_servers=self._nats[0],
            nats_security=self._nats[1],
            charsets=self._charsets,
            settled_elsewhere=self._elsewhere[name],
        )
        self._running[name] = route
        try:
            await route.run(task_status=task_status)
        finally:
            if self._running.get(name) is route:
                del self._running[name]

    def marks(self) -> dict[str, int]:
        """Each route's settled mark on this log (0 while it restarts): its position, for the cluster."""
        return {name: route.settled_mark if (route := self._running.get(name)) else 0 for name in self.configs}

    def needs_from(self) -> dict[str, int]:
        """Each route's lowest LSN it may still read (0 while it restarts: it cannot say)."""
        return {f"route {name}": route.needs_from if (route := self._running.get(name)) else 0 for name in self.configs}

    def settled_elsewhere(self, settled: Mapping[str, frozenset[str]]) -> None:
        """Messages about to be adopted that a route had settled on another node: it will not send them."""
        for name, ids in settled.items():
            if name in self._elsewhere:
                self._elsewhere[name] |= ids

    def not_coming(self, ids: set[str]) -> None:
        """Adopted messages this log had already: no route will read them as new, so none looks for them."""
        for waiting in self._elsewhere.values():
            waiting.difference_update(ids)

    def get(self, name: str) -> Route:
        """A running route by name.

        Raises:
            LookupError: no such route, or it is restarting.
        """
        if name not in self.configs:
            known = ", ".join(sorted(self.configs)) or "none configured"
            raise LookupError(f"no route named {name!r} (routes: {known})")
        route = self._running.get(name)
        if route is None:
            raise LookupError(f"route {name!r} is restarting: retry in a moment")
        return route

    def statistics(self) -> list[RouteStatistics]:
        return [self._running[name].statistics() for name in self.configs if name in self._running]
