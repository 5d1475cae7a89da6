"""The lane scheduler: bounded lanes, strict priority for critical, weighted standard/batch.

Items are admitted into their lane's bounded queue; `admit` waits while the
lane is full (backpressure to the source; nothing is dropped). A dispatcher
starts items on a shared budget of `workers_total` slots:

- critical first, always, on slots reserved for it (`critical.workers`), so a
  critical item never waits for a standard or batch item to finish;
- standard and batch share the other slots by weighted round robin
  (`standard_weight` : `batch_weight`), each within its own worker budget, so
  batch never starves and never crowds out standard.

The scheduler orders *which item starts next*; it never reorders one
patient's history, which is fixed by the log (the handler appends, and
patient actors apply in log order).

Each lane keeps HdrHistogram latency histograms (queue wait, and admission
to done, in microseconds) and counters, read with `statistics()`. In `fifo`
mode there is one queue in arrival order: the benchmark's baseline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from hdrh.histogram import HdrHistogram

from actors import loop_clock
from engine.core.errors import VigilError
from engine.core.model import Lane
from lanes.percentiles import values_at_percentiles
from lanes.settings import LaneLimits, SchedulerSettings

__all__ = ["LaneFull", "LaneScheduler", "LaneStatistics"]

T = TypeVar("T")
_US = 1_000_000
_HISTOGRAM_MAX_US = 3_600 * _US  # an hour: anything longer is recorded as an hour


class LaneFull(VigilError):  # noqa: N818 -- named for the condition, as queue.Full is
    """`admit_nowait` found the lane at capacity."""


@final
class LaneStatistics(msgspec.Struct, frozen=True):
    """One lane's state and latencies (microseconds)."""

    lane: str
    depth: int
    capacity: int
    running: int
    admitted: int
    done: int
    failed: int
    wait_p50_us: int
    wait_p99_us: int
    total_p50_us: int
    total_p99_us: int
    total_p999_us: int
    served_in_caller: int = 0


@final
class _LaneState:
    __slots__ = ("admitted", "done", "failed", "here", "limits", "not_full", "queue", "running", "total", "wait")

    def __init__(self, limits: LaneLimits) -> None:
        self.limits = limits
        self.queue: deque[tuple[object, float]] = deque()
        self.not_full = anyio.Event()
        self.running = 0
        self.admitted = self.done = self.failed = 0
        self.here = 0  # items served in their caller's task (`admit(here=True)`)
        self.wait = HdrHistogram(1, _HISTOGRAM_MAX_US, 3)
        self.total = HdrHistogram(1, _HISTOGRAM_MAX_US, 3)


_Job = tuple[Lane, object, float]  # an item started: its lane, the item, when it was admitted


@final
class _Worker:
    """An idle worker's wake-up call and the item it is woken with."""

    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: _Job | None = None
        self.wake = anyio.Event()


@final
class LaneScheduler(Generic[T]):
    """Runs `handler(lane, item)` for admitted items, lanes first; run with `tg.start(s.run)`.

    A handler's exception is counted as a failure of that item and logged by
    the caller's handler; it does not stop the scheduler (the handler is
    where an item's failure is turned into an ACK or a quarantine).
    """

    def __init__(self, settings: SchedulerSettings, handler: Callable[[Lane, T], Awaitable[None]]) -> None:
        if settings.critical.workers >= settings.workers_total and settings.mode == "priority":
            raise ValueError("workers_total must leave room beyond the critical lane's reserved workers")
        self.settings = settings
        self._handler = handler
        self._lanes = {
            Lane.CRITICAL: _LaneState(settings.critical),
            Lane.STANDARD: _LaneState(settings.standard),
            Lane.BATCH: _LaneState(settings.batch),
        }
        self._fifo: deque[tuple[Lane, object, float]] = deque()
        self._tg: TaskGroup | None = None  # set while `run` runs: workers start in it
        self._idle: list[_Worker] = []  # workers waiting for an item (at most workers_total exist)
        self._now: Callable[[], float] = anyio.current_time  # the loop's clock, resolved once `run` runs
        self._running_total = 0
        self._credits = {Lane.STANDARD: settings.standard_weight, Lane.BATCH: settings.batch_weight}

    # -- admission ------------------------------------------------------------------

    def admit_nowait(self, lane: Lane, item: T) -> None:
        """Queue an item, or raise `LaneFull`."""
        state = self._lanes[lane]
        if len(state.queue) >= state.limits.capacity_items:
            raise LaneFull(f"the {lane.value} lane holds {state.limits.capacity_items} items")
        now = self._now()
        if self.settings.mode == "fifo":
            self._fifo.append((lane, item, now))
        state.queue.append((item, now))
        state.admitted += 1
        self._dispatch()

    async def admit(self, lane: Lane, item: T, *, here: bool = False) -> None:
        """Queue an item, waiting while its lane is full (backpressure).

        With `here`, an item that would start at once is served in the
        caller's task (`_serve_here_now`) instead of being handed to a worker.
        """
        if here and self._serve_here_now(lane):
            with anyio.CancelScope(shield=True):  # started is seen through, as on a worker
                await self._serve(lane, item, self._now())
            self._dispatch()  # its slot is free again
            return
        while True:
            try:
                self.admit_nowait(lane, item)
            except LaneFull:
                state = self._lanes[lane]
                if state.not_full.is_set():
                    state.not_full = anyio.Event()
                await state.not_full.wait()
            else:
                return

    def _serve_here_now(self, lane: Lane) -> bool:
        """Whether a critical or standard item starts at once; if so it is counted as running.

        A hand-off to a worker task is a turn of the event loop, and under a
        flood one turn is every ready task's work: a critical message paid it
        on the way in and again on the way back. Served in the caller's task,
        it pays neither. Only when nothing of its lane waits, a slot is free
        for it (`_pick` would start it next), and the lanes are on: the order
        and the budgets are the scheduler's, only the task differs.
        """
        state = self._lanes[lane]
        if lane is Lane.BATCH or self.settings.mode == "fifo" or self._tg is None or state.queue:
            return False
        if state.running >= state.limits.workers:
            return False
        if lane is Lane.STANDARD:
            if not self._shared_slot_free() or self._lanes[Lane.CRITICAL].queue:
                return False
            self._credits[lane] = max(0, self._credits[lane] - 1)
        state.admitted += 1
        state.running += 1
        self._running_total += 1
        state.wait.record_value(1)
        state.here += 1
        return True

    # -- dispatching ----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start items as slots free up, until cancelled."""
        self._now = loop_clock()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                self._dispatch()  # what was admitted before the scheduler ran
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None
                self._idle = []  # their tasks end with the group

    def _dispatch(self) -> None:
        """Start what may start now: called when an item is admitted (a finished worker picks its own next).

        Items run on long-lived workers: an idle one is woken with its item,
        and a worker that finishes takes the next item itself, so a busy
        lane costs no task creation and no dispatcher hand-off per item. What
        starts, and in which order, is decided by `_pick` alone.
        """
        tg = self._tg
        if tg is None:
            return
        while (job := self._next()) is not None:
            if self._idle:
                worker = self._idle.pop()
                worker.job = job
                worker.wake.set()
            else:
                tg.start_soon(self._work, job)

    def _next(self) -> _Job | None:
        """The next item to start, counted as running; None if none may start now."""
        picked = self._pick_fifo() if self.settings.mode == "fifo" else self._pick()
        if picked is None:
            return None
        lane, _item, admitted_at = picked
        state = self._lanes[lane]
        state.running += 1
        self._running_total += 1
        state.wait.record_value(max(1, int((self._now() - admitted_at) * _US)))
        state.not_full.set()
        return picked

    async def _work(self, job: _Job) -> None:
        """One worker: its item, then the next while there is one, then idle until woken with another."""
        me = _Worker()
        while True:
            await self._serve(*job)
            following = self._next()
            if following is not None:
                job = following
                await anyio.lowlevel.checkpoint()  # a handler that never waited must not starve the loop
                continue
            me.wake = anyio.Event()
            self._idle.append(me)
            del job  # an idle worker keeps nothing of its last item (a large message weighs megabytes)
            await me.wake.wait()
            assert me.job is not None
            job, me.job = me.job, None

    async def _serve(self, lane: Lane, item: object, admitted_at: float) -> None:
        state = self._lanes[lane]
        try:
            await self._handler(lane, item)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 -- counted; the handler owns the item's fate
            state.failed += 1
        else:
            state.done += 1
        finally:
            state.total.record_value(max(1, int((self._now() - admitted_at) * _US)))
            state.running -= 1
            self._running_total -= 1

    def _pick(self) -> _Job | None:
        critical = self._lanes[Lane.CRITICAL]
        if critical.queue and critical.running < critical.limits.workers:
            return (Lane.CRITICAL, *critical.queue.popleft())
        if not self._shared_slot_free():
            return None
        ready = [
            lane
            for lane in (Lane.STANDARD, Lane.BATCH)
            if self._lanes[lane].queue and self._lanes[lane].running < self._lanes[lane].limits.workers
        ]
        if not ready:
            return None
        if len(ready) == 2 and self._credits[Lane.STANDARD] == 0 and self._credits[Lane.BATCH] == 0:
            self._credits = {Lane.STANDARD: self.settings.standard_weight, Lane.BATCH: self.settings.batch_weight}
        lane = (
            ready[0] if len(ready) == 1 else max(ready, key=lambda name: (self._credits[name], name is Lane.STANDARD))
        )
        self._credits[lane] = max(0, self._credits[lane] - 1)
        return (lane, *self._lanes[lane].queue.popleft())

    def _shared_slot_free(self) -> bool:
        """Whether standard or batch may start one more: the slots beyond critical's reserved ones."""
        shared = self.settings.workers_total - self.settings.critical.workers
        return self._running_total - self._lanes[Lane.CRITICAL].running < shared

    def _pick_fifo(self) -> _Job | None:
        if not self._fifo or self._running_total >= self.settings.workers_total:
            return None
        lane, item, admitted_at = self._fifo.popleft()
        self._lanes[lane].queue.popleft()
        return lane, item, admitted_at

    # -- reading ---------------------------------------------------------------------

    def statistics(self) -> list[LaneStatistics]:
        """Each lane's depth, counters and latency percentiles."""
        return [self._statistics(lane, state) for lane, state in self._lanes.items()]

    @staticmethod
    def _statistics(lane: Lane, state: _LaneState) -> LaneStatistics:
        wait_p50, wait_p99 = values_at_percentiles(state.wait, (50, 99))
        total_p50, total_p99, total_p999 = values_at_percentiles(state.total, (50, 99, 99.9))
        return LaneStatistics(
            lane=lane.value,
            depth=len(state.queue),
            capacity=state.limits.capacity_items,
            running=state.running,
            admitted=state.admitted,
            done=state.done,
            failed=state.failed,
            wait_p50_us=wait_p50,
            wait_p99_us=wait_p99,
            total_p50_us=total_p50,
            total_p99_us=total_p99,
            total_p999_us=total_p999,
            served_in_caller=state.here,
        )
