"""How far each route got on each partition, kept in the cluster so a takeover does not deliver it all again.

A route's position is local: an LSN of its node's log. Another node's log
numbers the same records differently, so the position travels as a stream
sequence of the partition's subject: "every record on the subject up to
sequence S is settled by route R" (delivered, refused, or not for it),
written to the `<prefix>_routes` bucket under `R.P`.

The owner knows pairs (S, L) from its replicator: everything on the
subject up to S is in its log at or below LSN L. It samples them each
round; a route whose settled mark has reached L has settled the subject up
to S. A node taking the partition over reads S for each route and tells
the route which adopted messages were settled before it came: those are
not sent again. Anything after S (delivered since the last write) is: at
least once, with the window one write interval wide.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, final

import anyio
import nats.js.errors
import structlog

from engine.cluster.replication import ReplicaBatch
from engine.infra.nats_client import DRIVER_ERRORS

__all__ = ["RouteProgress"]

_log = structlog.get_logger("vigil.cluster")
_SAMPLES: Final = 256  # pairs kept per partition: routes seconds behind still find theirs


@final
class RouteProgress:
    """Writes this node's routes' positions per served partition; reads them when a partition is taken over."""

    def __init__(
        self,
        bucket: Any,
        *,
        marks: Callable[[], Mapping[str, int]],
        positions: Callable[[], Mapping[int, tuple[int, int]]],
        interval_s: float,
    ) -> None:
        self._bucket = bucket
        self._marks = marks  # route name -> its settled mark (LSN) on this node
        self._positions = positions  # served partition -> (stream sequence, local LSN)
        self._interval_s = interval_s
        self._samples: dict[int, collections.deque[tuple[int, int]]] = {}
        self._written: dict[tuple[str, int], int] = {}

    async def run(self) -> None:
        """Sample and write, every interval, until cancelled; a broker away is tried again next round."""
        while True:
            await anyio.sleep(self._interval_s)
            try:
                await self._round()
            except DRIVER_ERRORS as exc:
                _log.warning("cluster.route_progress_failed", error=type(exc).__name__)

    def taken(self, partition: int) -> None:
        """A partition just taken over: its samples start again (the last owner's are not ours)."""
        self._samples.pop(partition, None)
        for key in [k for k in self._written if k[1] == partition]:
            del self._written[key]

    async def settled_elsewhere(
        self, partition: int, batches: Sequence[tuple[int, ReplicaBatch]]
    ) -> dict[str, frozenset[str]]:
        """For each route, the message ids in these batches (the subject, read at takeover) it had settled."""
        out: dict[str, frozenset[str]] = {}
        for route in self._marks():
            through = await self._read(route, partition)
            out[route] = frozenset(r.message_id for seq, batch in batches if seq <= through for r in batch.records)
        return out

    async def _round(self) -> None:
        marks = self._marks()
        for partition, pair in self._positions().items():
            samples = self._samples.setdefault(partition, collections.deque(maxlen=_SAMPLES))
            if not samples or samples[-1] != pair:
                samples.append(pair)
            for route, mark in marks.items():
                through = max((seq for seq, lsn in samples if lsn <= mark), default=0)
                if through > self._written.get((route, partition), 0):
                    await self._bucket.put(_key(route, partition), str(through).encode())
                    self._written[(route, partition)] = through

    async def _read(self, route: str, partition: int) -> int:
        try:
            entry = await self._bucket.get(_key(route, partition))
        except nats.js.errors.KeyNotFoundError:
            return 0
        try:
            return int(entry.value or b"0")
        except ValueError:
            return 0  # not ours: nothing is taken as settled


def _key(route: str, partition: int) -> str:
    return f"{route}.{partition}"
