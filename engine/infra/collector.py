"""Python's cyclic garbage collector, kept off the path of critical messages.

Measured in a node under sixteen billing connections: CPython's automatic
full collections ran four times in five seconds, 19 to 35 ms each, and found
nothing to free. Each one stopped the event loop, and they were the critical
ACK p99 (about 20 ms against 3 ms idle), whatever the lanes did. Their cost
is the number of objects the collector tracks: the node's own code (about
fifty thousand functions, types, dicts and modules after start), and whatever
messages have left alive since.

So the node moves what has lived a while out of the collector's sight
(`gc.freeze`): once it has started, then every `freeze_interval_s`; the
automatic collections then look only at what is young, and take well under a
millisecond. The price is cyclic garbage that was already old when frozen: it
is freed only by a full sweep (unfreeze, collect, freeze), which runs every
`sweep_interval_s` at a moment when no message is in flight (or, if the node
is never idle that long, once twice that interval has passed). Objects that
are not part of a cycle are freed by reference counting as ever, frozen or not.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Annotated, Literal, final

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

__all__ = ["Collector", "CollectorConfig"]

_log = structlog.get_logger("vigil.collector")


@final
class CollectorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[collector]`: how the node keeps the garbage collector's pauses short.

    Attributes:
        enabled: off, Python's collector runs as it would (full collections
            of every object, at moments of its choosing).
        freeze_interval_s: how often what has survived is frozen.
        sweep_interval_s: how often a full sweep frees old cyclic garbage,
            when nothing is in flight (at the latest after twice this).
    """

    enabled: bool = True
    freeze_interval_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 0.25
    sweep_interval_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 600.0


Action = Literal["froze", "swept"]


@final
class Collector:
    """Freezes the survivors now and then, sweeps them fully when the node is idle; run with `tg.start(c.run)`."""

    def __init__(self, config: CollectorConfig, busy: Callable[[], bool]) -> None:
        self.config = config
        self._busy = busy
        self._last_sweep = 0.0
        self.sweeps = 0

    def begin(self, now: float) -> None:
        """Collect what starting left behind, then freeze the rest (the node's code, mostly)."""
        gc.collect()
        gc.freeze()
        self._last_sweep = now

    def tick(self, now: float) -> Action:
        """Freeze the survivors, or, when a sweep is due and nothing is in flight (or it is overdue), sweep."""
        since = now - self._last_sweep
        due = since >= self.config.sweep_interval_s
        if (due and not self._busy()) or since >= 2 * self.config.sweep_interval_s:
            self._sweep(now)
            return "swept"
        gc.freeze()
        return "froze"

    def _sweep(self, now: float) -> None:
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self._last_sweep = now
        self.sweeps += 1
        _log.info("collector.swept", freed=freed, frozen=gc.get_freeze_count())

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled; the collector is left as Python runs it (nothing frozen) when this ends."""
        if not self.config.enabled:
            task_status.started()
            await anyio.sleep_forever()
        self.begin(anyio.current_time())
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.config.freeze_interval_s)
                self.tick(anyio.current_time())
        finally:
            gc.unfreeze()
