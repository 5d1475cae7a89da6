"""A running node's housekeeping: waiting for the word to stop, and the periodic per-lane summary."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from engine.infra.memory import release_free_memory
from lanes import LaneStatistics

__all__ = ["summarise", "until_stopped"]

_log = structlog.get_logger("vigil.node")


async def until_stopped(requested: anyio.Event) -> None:
    """Until SIGTERM or SIGINT arrives, or `requested` is set (`Node.stop`), whichever is first."""
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    _log.info("node.stopping", signal=signal.Signals(signum).name)
                    break
            tg.cancel_scope.cancel()

        async def on_request() -> None:
            await requested.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(on_signal)
        tg.start_soon(on_request)


async def summarise(
    interval_s: float, lanes: Callable[[], list[LaneStatistics]], *, task_status: TaskStatus[None]
) -> None:
    """Per-lane summaries at info, every `interval_s`; then free memory back to the system.

    Passivated records and finished bursts leave pages the allocator keeps
    for later (`engine.infra.memory`): a trim once an interval returns them.
    """
    task_status.started()
    while True:
        await anyio.sleep(interval_s)
        await anyio.to_thread.run_sync(release_free_memory)
        for lane in lanes():
            _log.info(
                "lane.summary",
                lane=lane.lane,
                depth=lane.depth,
                done=lane.done,
                failed=lane.failed,
                p50_ms=lane.total_p50_us / 1000,
                p99_ms=lane.total_p99_us / 1000,
            )
